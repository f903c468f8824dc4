#!/usr/bin/env bash
# Session 7, device calls 2-3 (~8 minutes by its limits), from the repository root (#8: int4 decode vs bf16 with
# the Mosaic GPU int4 kernel, the default on Hopper through the nk weight layout):
#   1. GPU tests of the Mosaic GPU kernel (planned tiles, variants, padded rows, an AWQ model through it)
#   2. decode-heavy B2 at 64 requests: bf16, AWQ, GPTQ, same machine
#   3. linear layers: q_o / k_v at 16 / 64 rows, the Mosaic plan timed first and last
# (call 2 also timed gate_up / down at 512 / 2048 rows: bf16 vs XLA's dequantize + GEMM; its AWQ run failed on
#  an 8-row decode bucket, whose 16-byte output tile no swizzle accepts: rows are now padded to 16)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup mb2
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests"
TAIL=6 gpu_tests int4_mosaic_gpu_tests 120 tests/quantization/test_int4_mosaic_gpu.py
echo "=== 2. decode-heavy B2, 64 requests"
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 100 -- "${DH64[@]}"; pack mosaic_b2.tgz
b2_run DH64_awq 100 -- "${DH64[@]}" --quantization awq; pack mosaic_b2.tgz
b2_run DH64_gptq 100 -- "${DH64[@]}" --quantization gptq; pack mosaic_b2.tgz
ratio_table DH64_bf16 DH64_awq DH64_gptq
echo "=== 3. linear layers"
timeout 90 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes q_o k_v --kinds bf16 int4_mosaic \
  --output "$W/quant_matmul_h200_mosaic_qo_kv.json" 2>&1 | grep -v Warning
pack mosaic_b2.tgz
echo "total ${SECONDS}s"
