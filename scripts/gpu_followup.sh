#!/usr/bin/env bash
# One call on one H200 (about 9-10 minutes), from the repository root: the measurements this session's changes
# still owe (see the issues' notes). Results: $OUT/results.tgz via scripts/gpu_bench_matrix.sh.
#   B1       the host-time cut of BlockTableRows: GPU busy (target 90%) and host ms/step
#   W8A8kv   fp8 W8A8 with K-minor weights + fp8 KV cache (target: 1.4x bf16 B2): its start-up never finished
#            within 140-170 s before; the bench now logs the weights / compile progress with timestamps
#   AWQ      B2 and the decode-heavy variant after int4_linear's switch to one 2-D product per shard
#   GPTQ     B2 (never measured; the same int4 path as AWQ)
set -uo pipefail
export BENCH_TIMEOUT=${BENCH_TIMEOUT:-200}
DECODE_HEAVY="--workload B2 --num-requests 256 --prompt-len 64 128 --output-len 1024 1024"
bash scripts/gpu_bench_matrix.sh \
  "B1:--workload B1 --gpu-busy" \
  "W8A8kv:--workload B2 --quantization fp8 --fp8-activations dynamic --kv-cache-dtype fp8 --gpu-busy" \
  "B2_awq:--workload B2 --quantization awq --gpu-busy" \
  "B2dh_awq:$DECODE_HEAVY --quantization awq --gpu-busy" \
  "B2_gptq:--workload B2 --quantization gptq --gpu-busy"
