#!/usr/bin/env bash
# Prepared in session 8 for one device call (~8 minutes by its limits), from the repository root (#8: the int4
# runs last measured before the Mosaic GPU kernel: the decode-heavy variant at 256 requests, 0.62x bf16, and B2,
# 0.77x), each as a same-machine pair with bf16:
#   1. decode-heavy B2 at 256 requests (256-row decode steps: the kernel's tm 256 plan), bf16 then AWQ
#   2. B2 (prefill chunks above 256 rows: XLA's dequantize + GEMM), bf16 then AWQ
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup ib2
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
DH256=(--num-requests 256 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH256_bf16 90 -- "${DH256[@]}"; pack ib2.tgz
b2_run DH256_awq 100 -- "${DH256[@]}" --quantization awq; pack ib2.tgz
ratio_table DH256_bf16 DH256_awq
b2_run B2_bf16 110 -- ; pack ib2.tgz
b2_run B2_awq 130 -- --quantization awq; pack ib2.tgz
ratio_table B2_bf16 B2_awq
echo "total ${SECONDS}s"
