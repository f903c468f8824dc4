#!/usr/bin/env bash
# Session 9, call 3 (~9 minutes by its limits), from the repository root:
#   1. GPU tests of the paged Mosaic GPU prefill (this tree reads each K/V tile's page ids once, before the memory
#      warpgroup waits for a slot)
#   2. 16 x 8k prompts, 8 outputs, Triton prefill (default) then JAXLLM_ATTENTION_IMPL=pallas_mosaic, each traced
#      (#4: 1.53x in the kernel benchmark at 1 x 8k, 1.01x through the engine in session 8)
#   3. int4 gate_up / down at 512-8192 rows: bf16, XLA's dequantize + GEMM (the dispatch above 256 rows), the
#      Mosaic GPU kernel's plan (#8: B2 with AWQ 0.95x bf16 in call 1)
#   4. B2 with AWQ and the Mosaic GPU kernel at every row count (JAXLLM_QUANT_MATMUL_IMPL=mosaic_gpu)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup c3
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests"
TAIL=4 gpu_tests mosaic_prefill_gpu_tests 100 tests/ops/test_paged_attention_mosaic_gpu.py -x; pack c3.tgz
echo "=== 2. 16 x 8k prompts, traced"
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
b2_run L8k_triton 110 --profile -- "${LONG[@]}"; pack c3.tgz
b2_run L8k_mosaic 110 JAXLLM_ATTENTION_IMPL=pallas_mosaic --profile -- "${LONG[@]}"; pack c3.tgz
ratio_table L8k_triton L8k_mosaic
echo "=== 3. int4 products above 256 rows"
timeout 80 python3 scripts/bench_quant_matmul.py --m 512 2048 8192 --shapes gate_up down \
  --kinds bf16 int4_reference int4_mosaic --output "$W/quant_matmul_h200_large_m_s9.json" 2>&1 | grep -v Warning
pack c3.tgz
if [ "$SECONDS" -lt 430 ]; then
  echo "=== 4. B2 AWQ, Mosaic GPU kernel at every row count"
  b2_run B2_awq_mosaic_all 130 JAXLLM_QUANT_MATMUL_IMPL=mosaic_gpu -- --quantization awq; pack c3.tgz
else
  echo "=== 4. skipped (${SECONDS}s used)"
fi
echo "total ${SECONDS}s"
