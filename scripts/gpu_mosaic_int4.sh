#!/usr/bin/env bash
# Session 7, one device call (~6 minutes by its limits), from the repository root:
#   1. GPU correctness of the Mosaic GPU int4 kernel (ops/quant_matmul/mosaic_gpu.py) against the reference
#   2. linear layers at 16 / 64 / 128 / 256 rows with sustained timing: bf16 (XLA), our Triton int4 kernel at its
#      plan, the Mosaic GPU int4 kernel at its plan and neighbours
#   3. JAX's Mosaic GPU FlashAttention-3 (fp16) against cuDNN at 1 x 8k / 8 x 1k (issue 4's decision)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup mosaic_int4
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests of the Mosaic GPU int4 kernel"
TAIL=25 gpu_tests int4_mosaic_gpu_tests 150 tests/quantization/test_int4_mosaic_gpu.py -x
echo "=== 2. linear layers"
timeout 200 python3 scripts/bench_quant_matmul.py --m 16 64 128 256 --shapes gate_up down q_o k_v \
  --kinds bf16 int4_pallas int4_mosaic --pallas-plan-only --output "$W/quant_matmul_h200_mosaic.json" 2>&1 | grep -v Warning
echo "=== 3. FlashAttention-3 (Mosaic GPU) vs cuDNN"
timeout 80 python3 scripts/probe_fa3.py 2>&1 | grep -v Warning | tee "$W/fa3_probe.txt"
pack mosaic_int4.tgz
echo "total ${SECONDS}s"
