#!/usr/bin/env bash
# Session 7, second device call (~9 minutes by its limits), from the repository root (#8: int4 decode vs bf16
# with the Mosaic GPU int4 kernel, now the default on Hopper through the nk weight layout):
#   1. GPU tests: the Mosaic GPU kernel (planned tiles, variants, an AWQ model through it) and the int4 dispatch
#   2. decode-heavy B2 at 64 requests, bf16 then AWQ, same machine
#   3. linear layers: q_o / k_v at 16 / 64 rows (missed by call 1's limit); gate_up / down at 512 / 2048 rows,
#      Mosaic kernel vs XLA's dequantize + GEMM (where MOSAIC_MAX_ROWS belongs)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup mb2
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests"
timeout 140 python3 -m pytest tests/quantization/test_int4_mosaic_gpu.py tests/quantization/test_int4_gpu.py -q \
  -k "mosaic or dispatch or model" 2>&1 | tail -15 | tee "$W/int4_mosaic_gpu_tests_2.txt"
echo "=== 2. decode-heavy B2, 64 requests"
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 100 -- "${DH64[@]}"; pack mosaic_b2.tgz
b2_run DH64_awq 100 -- "${DH64[@]}" --quantization awq; pack mosaic_b2.tgz
ratio_table DH64_bf16 DH64_awq
echo "=== 3. linear layers"
timeout 60 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes q_o k_v --kinds bf16 int4_mosaic \
  --output "$W/quant_matmul_h200_mosaic_qo_kv.json" 2>&1 | grep -v Warning
timeout 100 python3 scripts/bench_quant_matmul.py --m 512 2048 --shapes gate_up down \
  --kinds bf16 int4_reference int4_mosaic --output "$W/quant_matmul_h200_mosaic_large.json" 2>&1 | grep -v Warning
pack mosaic_b2.tgz
echo "total ${SECONDS}s"
