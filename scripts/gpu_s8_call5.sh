#!/usr/bin/env bash
# Session 8, call 5 (~4 minutes; the engine run under pallas_mosaic also checks call 4's unaligned-metadata failure), from the repository root (#4 integration of the Mosaic GPU prefill):
#   1. GPU tests of the prefill split (long sequences through Mosaic, short through Triton)
#   2. long prompts through the engine (16 x 8k prompts, 8 outputs): Triton prefill vs JAXLLM_ATTENTION_IMPL=pallas_mosaic
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup c5
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests (split at 150 tokens)"
TAIL=4 gpu_tests mosaic_prefill_gpu_tests 80 tests/ops/test_paged_attention_mosaic_gpu.py -x -k "150"
pack c5.tgz
echo "=== 2. long prompts"
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
b2_run L8k_triton 75 -- "${LONG[@]}"; pack c5.tgz
b2_run L8k_mosaic 75 JAXLLM_ATTENTION_IMPL=pallas_mosaic -- "${LONG[@]}"; pack c5.tgz
ratio_table L8k_triton L8k_mosaic
echo "total ${SECONDS}s"
