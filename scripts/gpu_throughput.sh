#!/usr/bin/env bash
# One device call: install, end-to-end greedy check, then the throughput workloads. Results land in $OUT.
# Usage (device tool): bash scripts/gpu_throughput.sh [B1 B2 ...]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader
timeout 150 python3 scripts/gpu_e2e_check.py --output "$OUT/e2e_h200.json" 2>&1 | tail -20
for w in "${@:-B1}"; do
  timeout 400 python3 -m jaxllm.bench --workload "$w" --output "$OUT/throughput_$w.json" 2>&1 | grep -v "^WARNING" | tail -20
done
