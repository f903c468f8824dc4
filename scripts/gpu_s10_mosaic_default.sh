#!/usr/bin/env bash
# Session 10, call 2, from the repository root: the Mosaic GPU prefill as the Hopper default for long prefills
# (dispatch.default_impl, ModelRunner._choose_prefill_split), checked end to end. Each step starts only if its
# time limit ends before DEADLINE seconds (default 560: the device call's limit, less a margin), in this order:
#   1. the dispatcher's GPU test (the default on this sm_90 device)
#   2. end-to-end greedy check, bf16 engine vs fp32 transformers, prompts of 2100-3600 tokens (every prompt has a
#      prefill chunk of >= 2048 tokens), under the default and under forced Triton
#   3. a long-prompt mix (64 requests, prompts 2048-8192, outputs 128-256): the default vs forced Triton
#   4. 16 x 8k prompts under the default (call 1 measured the forced pairs)
#   5. B2 with the default (prompts <= 1024 tokens: no long prefill; each program run once at start-up)
#   6. B2 with AWQ (the int4 kernel with session 9's y epilogue; never measured on B2)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup md
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
DEADLINE=${DEADLINE:-560}
fits() {  # fits LIMIT_S NAME: whether a step of LIMIT_S seconds ends before DEADLINE (else says it is skipped)
  if [ $((SECONDS + $1)) -le "$DEADLINE" ]; then return 0; fi
  echo "=== $2 skipped (${SECONDS}s used, deadline ${DEADLINE}s)"; return 1
}
echo "=== 1. dispatcher test"
TAIL=3 gpu_tests dispatch_gpu_test 60 tests/ops/test_paged_attention_gpu.py -k dispatch; pack md.tgz
echo "=== 2. end-to-end greedy, long prompts"
for impl in default pallas_triton; do
  fits 100 "e2e $impl" || continue
  envs=(); [ "$impl" != default ] && envs=("JAXLLM_ATTENTION_IMPL=$impl")
  env "${envs[@]}" timeout 100 python3 scripts/gpu_e2e_check.py --prompt-len 2100 3600 --max-num-batched-tokens 4096 \
    --output "$W/e2e_long_$impl.json" > "$W/e2e_long_$impl.log" 2>&1 || echo "e2e $impl exited with $?"
  grep "^{\"device" "$W/e2e_long_$impl.log" || tail -5 "$W/e2e_long_$impl.log"
  pack md.tgz
done
MIX=(--num-requests 64 --prompt-len 2048 8192 --output-len 128 256)
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
fits 100 MIX_default && { b2_run MIX_default 100 -- "${MIX[@]}"; pack md.tgz; }
fits 90 MIX_triton && { b2_run MIX_triton 90 JAXLLM_ATTENTION_IMPL=pallas_triton -- "${MIX[@]}"; pack md.tgz; }
fits 60 L8k_default && { b2_run L8k_default 60 -- "${LONG[@]}"; pack md.tgz; }
fits 100 B2_default && { b2_run B2_default 100 --; pack md.tgz; }
fits 140 B2_awq && { b2_run B2_awq 140 -- --quantization awq; pack md.tgz; }
ratio_table MIX_triton MIX_default
ratio_table B2_default B2_awq L8k_default
echo "total ${SECONDS}s"
