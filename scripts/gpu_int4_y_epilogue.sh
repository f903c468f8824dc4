#!/usr/bin/env bash
# Session 9, one device call (~8 minutes by its limits), from the repository root (#8: the Mosaic GPU int4 kernel
# now writes y [tokens, N] instead of y^T, so XLA no longer transposes every int4 output: 0.71 ms a step of copies
# and transposes in session 8's decode-heavy AWQ trace, against bf16's 0.10):
#   1. every GPU test of the Mosaic GPU int4 kernel (planned tiles, variants, several groups a step, padded rows,
#      the grouped q / k / v launch)
#   2. gate_up / down / q_o at 16 / 64 / 256 rows: bf16 against the kernel's plan (and the tk 256 variants)
#   3. decode-heavy B2 at 64 and 256 requests, bf16 then AWQ (same machine)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup yep
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests"
TAIL=6 gpu_tests int4_mosaic_gpu_tests 150 tests/quantization/test_int4_mosaic_gpu.py; pack yep.tgz
echo "=== 2. products"
timeout 90 python3 scripts/bench_quant_matmul.py --m 16 64 256 --shapes gate_up down q_o --kinds bf16 int4_mosaic \
  --variants 'tk256' --output "$W/quant_matmul_h200_y_epilogue.json" 2>&1 | grep -v Warning | tail -30
pack yep.tgz
echo "=== 3. decode-heavy B2"
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 90 -- "${DH64[@]}"; pack yep.tgz
b2_run DH64_awq 90 -- "${DH64[@]}" --quantization awq; pack yep.tgz
ratio_table DH64_bf16 DH64_awq
DH256=(--num-requests 256 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH256_awq 100 -- "${DH256[@]}" --quantization awq; pack yep.tgz
echo "total ${SECONDS}s"
