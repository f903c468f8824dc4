#!/usr/bin/env bash
# Prepared in session 9 for one device call (~9-10 minutes by its limits), from the repository root (#4: under
# JAXLLM_ATTENTION_IMPL=pallas_mosaic the traced 16 x 8k engine run had 3% less GPU time but 15 ms more host time a
# step and a less busy GPU, 0.95x wall):
#   1. every GPU test of the paged Mosaic prefill (session 9's call 3 ran 11 of 18 before its limit)
#   2. each program's first and second execution, and the host time to enqueue 20 calls against the time until
#      they finish: Triton prefill, Mosaic prefill, int4 kernel (scripts/first_run_probe.py)
#   3. the 16 x 8k pair untraced (session 10: the runner now executes each program once at start-up), then the
#      pair with XLA's CUDA command buffers off (does a Mosaic GPU custom call split the step's command buffers
#      into more launches?), then the first pair again, time allowing
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup frp
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests"
TAIL=4 gpu_tests mosaic_prefill_gpu_tests 130 tests/ops/test_paged_attention_mosaic_gpu.py -k "150-"; pack frp.tgz
echo "=== 2. first-run probe"
timeout 90 python3 scripts/first_run_probe.py --json "$W/first_run_probe.json" 2>&1 | grep -v Warning | tail -10
pack frp.tgz
LONG=(--num-requests 16 --prompt-len 8192 8192 --output-len 8 8)
NOCB=XLA_FLAGS=--xla_gpu_enable_command_buffer=
for i in 1 2 3; do
  if [ "$SECONDS" -gt 430 ]; then echo "=== pair $i skipped (${SECONDS}s used)"; break; fi
  envs=(); [ "$i" = 2 ] && envs=("$NOCB")
  b2_run L8k_triton_$i 80 "${envs[@]}" -- "${LONG[@]}"; pack frp.tgz
  b2_run L8k_mosaic_$i 80 "${envs[@]}" JAXLLM_ATTENTION_IMPL=pallas_mosaic -- "${LONG[@]}"; pack frp.tgz
done
ratio_table L8k_triton_1 L8k_mosaic_1 L8k_triton_2 L8k_mosaic_2 L8k_triton_3 L8k_mosaic_3
echo "total ${SECONDS}s"
