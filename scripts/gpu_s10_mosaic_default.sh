#!/usr/bin/env bash
# Session 10, call 2 (~7 minutes by its limits), from the repository root: the Mosaic GPU prefill as the Hopper
# default for long prefills (dispatch.default_impl, ModelRunner._choose_prefill_split), checked end to end.
#   1. the dispatcher's GPU test (the default on this sm_90 device)
#   2. end-to-end greedy check, bf16 engine vs fp32 transformers, prompts of 2100-3600 tokens (every prompt has a
#      prefill chunk of >= 2048 tokens), under the default and under forced Triton
#   3. 16 x 8k prompts: the default vs JAXLLM_ATTENTION_IMPL=pallas_triton (call 1 measured the forced pair)
#   4. a long-prompt mix (64 requests, prompts 2048-8192, outputs 128-256): the default vs forced Triton
#   5. B2 with the default (prompts <= 1024 tokens: no long prefill; each program run once at start-up)
#   6. B2 with AWQ, time allowing
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup md
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. dispatcher test"
TAIL=3 gpu_tests dispatch_gpu_test 90 tests/ops/test_paged_attention_gpu.py -k dispatch; pack md.tgz
echo "=== 2. end-to-end greedy, long prompts"
for impl in default pallas_triton; do
  envs=(); [ "$impl" != default ] && envs=("JAXLLM_ATTENTION_IMPL=$impl")
  env "${envs[@]}" timeout 120 python3 scripts/gpu_e2e_check.py --prompt-len 2100 3600 --max-num-batched-tokens 4096 \
    --output "$W/e2e_long_$impl.json" > "$W/e2e_long_$impl.log" 2>&1 || echo "e2e $impl exited with $?"
  grep "^{\"device" "$W/e2e_long_$impl.log" || tail -5 "$W/e2e_long_$impl.log"
  pack md.tgz
done
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
MIX=(--num-requests 64 --prompt-len 2048 8192 --output-len 128 256)
b2_run L8k_default 80 -- "${LONG[@]}"; pack md.tgz
b2_run L8k_triton 80 JAXLLM_ATTENTION_IMPL=pallas_triton -- "${LONG[@]}"; pack md.tgz
b2_run MIX_default 100 -- "${MIX[@]}"; pack md.tgz
b2_run MIX_triton 100 JAXLLM_ATTENTION_IMPL=pallas_triton -- "${MIX[@]}"; pack md.tgz
if [ "$SECONDS" -lt 470 ]; then b2_run B2_default 110 --; pack md.tgz; else echo "=== B2 skipped (${SECONDS}s used)"; fi
# 6. B2 with AWQ (the int4 kernel with session 9's y epilogue; never measured on B2), same machine as 5
if [ "$SECONDS" -lt 420 ]; then b2_run B2_awq 150 -- --quantization awq; pack md.tgz; else echo "=== B2 awq skipped (${SECONDS}s used)"; fi
ratio_table L8k_triton L8k_default
ratio_table MIX_triton MIX_default
ratio_table B2_default B2_awq
echo "total ${SECONDS}s"
