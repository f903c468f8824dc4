#!/usr/bin/env bash
# One call on one H200 (or GPU 0 of a bigger machine), ~6-8 minutes, from the repository root: why fp8 W8A8 and
# AWQ gain so little end to end (#8). Results in $OUT: quant_profile.tgz (bench JSONs, logs, kernel summaries).
#   1. the fp8 W8A8 GEMM (K-minor weight) and int4 reference vs bf16 at M=256/2048, with XLA's default autotuning
#      and with --xla_gpu_autotune_level=0 (what W8A8 needs for a start-up that finishes)
#   2. kernel-time breakdowns (scripts/profile_summary.py) of short runs: B2 subset in bf16 and W8A8 + fp8 KV,
#      and a decode-heavy subset in bf16 and AWQ
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/qp"; mkdir -p "$W"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv,noheader
pack() { tar czf "$OUT/quant_profile.tgz" -C "$W" .; }
for level in default 0; do
  flags=""; [ "$level" = 0 ] && flags="--xla_gpu_autotune_level=0"
  echo "=== GEMMs, autotune $level"
  XLA_FLAGS="$flags" timeout 100 python3 scripts/bench_quant_matmul.py --m 256 2048 --kinds fp8_w8a8_nk int4_reference \
    --output "$W/matmul_autotune_$level.json" 2>&1 | grep -v "^WARNING\|DeprecationWarning\|getattr(s._pl"
  pack
done
profile() {  # profile NAME LIMIT XLA_FLAGS ARGS...
  local name=$1 limit=$2 flags=$3; shift 3
  echo "=== $name: jaxllm bench $* (XLA_FLAGS=$flags)"
  XLA_FLAGS="$flags" timeout "$limit" python3 -m jaxllm.bench "$@" --profile-dir "$W/trace_$name" \
    --output "$W/$name.json" > "$W/$name.log" 2>&1 || echo "$name exited with $?"
  grep "output tok/s\|ms per step" "$W/$name.log"
  steps=$(python3 -c "import json;print(json.load(open('$W/$name.json'))['jaxllm']['steps'])" 2>/dev/null)
  timeout 60 python3 scripts/profile_summary.py "$W/trace_$name" --top 14 ${steps:+--steps $steps} \
    --json "$W/kernels_$name.json" 2>&1 | tee "$W/kernels_$name.txt" | cut -c1-150
  rm -rf "$W/trace_$name"; pack
}
SUB="--workload B2 --num-requests 300"
DH="--workload B2 --num-requests 256 --prompt-len 64 128 --output-len 256 256"
profile B2sub_bf16 110 "" $SUB
profile B2sub_w8a8kv 110 "--xla_gpu_autotune_level=0" $SUB --quantization fp8 --fp8-activations dynamic --kv-cache-dtype fp8
profile DH_bf16 100 "" $DH
profile DH_awq 100 "" $DH --quantization awq
echo "total ${SECONDS}s"
