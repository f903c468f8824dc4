#!/usr/bin/env bash
# One device call: install, end-to-end greedy check, then the throughput workloads. Results land in $OUT.
# Usage (device tool): bash scripts/gpu_throughput.sh [B1 B2 ...]   (per-workload time limit: BENCH_TIMEOUT s;
# extra bench flags in BENCH_ARGS, e.g. BENCH_ARGS="--tensor-parallel-size 2" on the 2-GPU machine;
# SKIP_E2E=1 skips the end-to-end greedy check)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader
if [ -n "${SKIP_E2E:-}" ]; then :
elif ! timeout 150 python3 scripts/gpu_e2e_check.py --output "$OUT/e2e_h200.json" > "$OUT/e2e.log" 2>&1; then
  echo "e2e check FAILED with the default attention; benches fall back to JAXLLM_ATTENTION_IMPL=chunked"
  export JAXLLM_ATTENTION_IMPL=chunked
fi
[ -f "$OUT/e2e.log" ] && tail -20 "$OUT/e2e.log"
for w in "${@:-B1}"; do
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-220}" python3 -m jaxllm.bench --workload "$w" ${BENCH_ARGS:-} --output "$OUT/throughput_$w.json" \
    > "$OUT/bench_$w.log" 2>&1 || echo "bench $w exited with $?"
  grep -v "^WARNING" "$OUT/bench_$w.log" | tail -16
done
