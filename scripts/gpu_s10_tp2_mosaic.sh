#!/usr/bin/env bash
# Session 10, call 3 (2 H200s, ~5 minutes by its limits), from the repository root: the Mosaic GPU prefill (the
# Hopper default for long prefills since session 10) under tensor parallelism, where it runs per device inside
# shard_map (4 of Llama-3.1-8B's 8 kv heads and 16 of its 32 q heads each): never run there before.
#   1. a long-prompt mix at TP=2 under the default, then under forced Triton (same machine)
#   2. 16 x 8k prompts at TP=2, the same two, time allowing
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup tp2
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
TP=(--tensor-parallel-size 2)
MIX=(--num-requests 64 --prompt-len 2048 8192 --output-len 128 256)
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
b2_run TP2_MIX_default 130 -- "${TP[@]}" "${MIX[@]}"; pack tp2.tgz
b2_run TP2_MIX_triton 110 JAXLLM_ATTENTION_IMPL=pallas_triton -- "${TP[@]}" "${MIX[@]}"; pack tp2.tgz
if [ "$SECONDS" -lt 330 ]; then
  b2_run TP2_L8k_default 80 -- "${TP[@]}" "${LONG[@]}"; pack tp2.tgz
  b2_run TP2_L8k_triton 80 JAXLLM_ATTENTION_IMPL=pallas_triton -- "${TP[@]}" "${LONG[@]}"; pack tp2.tgz
fi
ratio_table TP2_MIX_triton TP2_MIX_default
ratio_table TP2_L8k_triton TP2_L8k_default
echo "total ${SECONDS}s"
