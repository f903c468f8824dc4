#!/usr/bin/env bash
# Prepared in session 8 for one device call (~5 minutes by its limits), from the repository root (#4: the Mosaic GPU
# prefill is 1.53x the Triton prefill at 1 x 8k in the kernel benchmark, but 16 prompts of 8k tokens through the
# engine measured 1.01x; a kernel trace of each says where the step's time goes):
#   1. 16 x 8k prompts, 8 outputs, Triton prefill (default), with a kernel trace
#   2. the same under JAXLLM_ATTENTION_IMPL=pallas_mosaic, with a kernel trace
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup ptr
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
b2_run L8k_triton 110 --profile -- "${LONG[@]}"; pack ptr.tgz
b2_run L8k_mosaic 110 JAXLLM_ATTENTION_IMPL=pallas_mosaic --profile -- "${LONG[@]}"; pack ptr.tgz
ratio_table L8k_triton L8k_mosaic
echo "total ${SECONDS}s"
