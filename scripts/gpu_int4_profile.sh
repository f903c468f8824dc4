#!/usr/bin/env bash
# One call on one H200 (~6 minutes by its limits), from the repository root (#8: int4 decode vs bf16):
#   1. decode-heavy B2 at 64 requests, bf16 then AWQ int4 (our kernel up to 64 rows), same machine
#   2. kernel-time breakdowns (scripts/profile_summary.py) of the same workload with 256-token outputs, AWQ then
#      bf16: which int4 GEMMs cost what per step at the engine's clocks (the microbenchmark's short bursts do not
#      keep the GPU at its full clock)
# Results in $OUT/p and one archive $OUT/int4_profile.tgz.
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/p"; mkdir -p "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.max.sm --format=csv,noheader
pack() { tar czf "$OUT/int4_profile.tgz" -C "$W" .; }
run() {  # run NAME LIMIT [--profile] -- ARGS...
  local name=$1 limit=$2 prof=""; shift 2
  [ "$1" = "--profile" ] && { prof="--profile-dir $W/trace_$name"; shift; }
  shift
  echo "=== $name: jaxllm bench --workload B2 $*"
  timeout "$limit" python3 -m jaxllm.bench --workload B2 --gpu-busy "$@" $prof --output "$W/$name.json" \
    > "$W/$name.log" 2>&1 || echo "$name exited with $?"
  grep "output tok/s\|start-up\|ms per step" "$W/$name.log"
  if [ -n "$prof" ]; then
    steps=$(python3 -c "import json;print(json.load(open('$W/$name.json'))['jaxllm']['steps'])" 2>/dev/null)
    timeout 60 python3 scripts/profile_summary.py "$W/trace_$name" --top 16 ${steps:+--steps $steps} \
      --json "$W/kernels_$name.json" 2>&1 | tee "$W/kernels_$name.txt" | cut -c1-160
    rm -rf "$W/trace_$name"
  fi
  pack
}
DH64=(--num-requests 64 --prompt-len 64 128)
run DH64_bf16 90 -- "${DH64[@]}" --output-len 1024 1024
run DH64_awq 80 -- "${DH64[@]}" --output-len 1024 1024 --quantization awq
run DH64s_awq 80 --profile -- "${DH64[@]}" --output-len 256 256 --quantization awq
run DH64s_bf16 80 --profile -- "${DH64[@]}" --output-len 256 256
echo "total ${SECONDS}s"
