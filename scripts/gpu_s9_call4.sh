#!/usr/bin/env bash
# Session 9, call 4 (~8 minutes by its limits), from the repository root (#8, the int4 kernel with the y epilogue
# and the tk 256 plan for token tiles up to 64 rows):
#   1. decode-heavy B2 at 64 requests, bf16 then AWQ (same machine; call 2 with tk 128: 1.17x)
#   2. decode-heavy B2 at 256 requests, bf16 then AWQ (same machine; call 1 before the y epilogue: 0.96x)
#   3. the int4 Mosaic GPU kernel's planned-tile tests (the plan now takes tk 256 up to 64 rows), time allowing
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup c4
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 90 -- "${DH64[@]}"; pack c4.tgz
b2_run DH64_awq 90 -- "${DH64[@]}" --quantization awq; pack c4.tgz
ratio_table DH64_bf16 DH64_awq
DH256=(--num-requests 256 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH256_bf16 90 -- "${DH256[@]}"; pack c4.tgz
b2_run DH256_awq 100 -- "${DH256[@]}" --quantization awq; pack c4.tgz
ratio_table DH256_bf16 DH256_awq
echo "=== planned-tile GPU tests"
TAIL=4 gpu_tests int4_mosaic_gpu_tests 80 tests/quantization/test_int4_mosaic_gpu.py -k "planned or padded"
pack c4.tgz
echo "total ${SECONDS}s"
