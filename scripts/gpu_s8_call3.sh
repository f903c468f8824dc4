#!/usr/bin/env bash
# Session 8, call 3 (~7 minutes by its limits), from the repository root:
#   1. GPU tests of the paged Mosaic GPU prefill (#4; Lane semantics + q gathered by slot after call 2's failure)
#   2. the attention benchmark (its prefill rows time the Mosaic kernel next to ours, cuDNN and JAX's FA3)
#   3. GPU tests of the int4 Mosaic kernel with several groups per K step (#8)
#   4. gate_up / down at 16 / 64 rows: the plan (tk 128) against tk 256 (two groups a step)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup c3
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests"
TAIL=25 gpu_tests mosaic_prefill_gpu_tests 120 tests/ops/test_paged_attention_mosaic_gpu.py -x
pack c3.tgz
echo "=== 2. attention benchmark"
timeout 130 python3 scripts/bench_kernels.py --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^prefill" "$W/bench_kernels.log" | cut -c1-400
pack c3.tgz
echo "=== 3. int4 GPU tests, several groups per K step"
TAIL=4 gpu_tests int4_groups_per_step_tests 90 tests/quantization/test_int4_mosaic_gpu.py -k several_groups
echo "=== 4. int4 tk 256"
timeout 150 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes gate_up down --kinds bf16 int4_mosaic \
  --variants tk256 --output "$W/quant_matmul_h200_tk256.json" 2>&1 | grep -v Warning
pack c3.tgz
echo "total ${SECONDS}s"
