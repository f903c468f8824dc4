#!/usr/bin/env bash
# One device call, several `jaxllm bench` runs in a row (the persistent compilation cache is shared, so a
# repeated model measures the warm start-up). Each item is NAME:BENCH ARGS; JSON, logs and host profiles go
# to $OUT/results.tgz (one file back), and each run's table is printed.
#   bash scripts/gpu_bench_matrix.sh "B1_cold:--workload B1 --gpu-busy" "B1_warm:--workload B1 --gpu-busy"
# "@W@" in ARGS is the results folder (e.g. --host-profile @W@/prof.txt). Per-run time limit: BENCH_TIMEOUT seconds (default 240).
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/work"; mkdir -p "$W"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader
for item in "$@"; do
  name=${item%%:*}; args=${item#*:}; args=${args//@W@/$W}
  echo "=== $name: jaxllm bench $args"
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-240}" python3 -m jaxllm.bench $args --output "$W/$name.json" > "$W/$name.log" 2>&1 \
    || echo "$name exited with $?"
  grep -v "WARNING\|^I0000\|^W0000" "$W/$name.log" | tail -15
  tar czf "$OUT/results.tgz" -C "$W" .
done
