#!/usr/bin/env bash
# Session 9, one device call (~8 minutes by its limits), from the repository root (#4: the Mosaic GPU prefill is
# 1.53x the Triton prefill at 1 x 8k in the kernel benchmark, but 16 prompts of 8k tokens through the engine
# measured 1.01x; this tree also reads each K/V tile's page ids once, before the memory warpgroup waits for a slot):
#   1. GPU tests of the paged Mosaic GPU prefill
#   2. the attention benchmark (prefill rows with shuffled and with pool-order pages)
#   3. 16 x 8k prompts, 8 outputs, Triton prefill (default) then JAXLLM_ATTENTION_IMPL=pallas_mosaic, each traced
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup ppi
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests"
TAIL=4 gpu_tests mosaic_prefill_gpu_tests 100 tests/ops/test_paged_attention_mosaic_gpu.py -x; pack ppi.tgz
echo "=== 2. attention benchmark"
timeout 130 python3 scripts/bench_kernels.py --out-dir "$W" --tag h200_s9 > "$W/bench_kernels.log" 2>&1
grep "^prefill\|^mixed" "$W/bench_kernels.log" | cut -c1-400; pack ppi.tgz
echo "=== 3. 16 x 8k prompts, traced"
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
b2_run L8k_triton 110 --profile -- "${LONG[@]}"; pack ppi.tgz
b2_run L8k_mosaic 110 JAXLLM_ATTENTION_IMPL=pallas_mosaic --profile -- "${LONG[@]}"; pack ppi.tgz
ratio_table L8k_triton L8k_mosaic
echo "total ${SECONDS}s"
