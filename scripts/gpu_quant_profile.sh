#!/usr/bin/env bash
# One call on one H200 (or GPU 0 of a bigger machine), from the repository root, at most ~9.5 minutes by its limits:
# why fp8 W8A8 and AWQ gain little end to end (#8). Results in $OUT: quant_profile.tgz (JSONs, logs, summaries).
#   1. the linear-layer microbenchmark, one call per weight copy, with W8A8 writing bf16 instead of f32 from the
#      fp8 GEMM (fp8_w8a8_nk_bf16: half the output bytes; the engine's W8A8 default since session 5)
#   2. a kernel-time breakdown (scripts/profile_summary.py) of a 300-request B2 subset in W8A8 + fp8 KV; the engine
#      compiles W8A8 programs at autotune level 2 by itself since 2dcb1b5 (no XLA_FLAGS: this checks that path)
#   3. B2 in full with W8A8 alone (bf16 KV cache), for the quantization table
# WITH_BF16=1 adds a bf16 trace of the same subset (~3 min), WITH_INT4=1 decode-heavy bf16 and AWQ traces (~5.5
# min): give those their own call. (6b282b6's version ran the microbenchmark under autotune levels default / 0;
# 66d76c0's also an int4-typed layout, since removed, and AWQ in it: benchmarks/quant_matmul_h200.md.)
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/qp"; mkdir -p "$W"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,clocks.sm --format=csv,noheader
pack() { tar czf "$OUT/quant_profile.tgz" -C "$W" .; }
echo "=== linear layers, one call per weight copy (no shared dequantization)"
# autotune level 2 (what the engine uses for W8A8): the default level's checks take up to 25 s per fp8 GEMM shape
XLA_FLAGS=--xla_gpu_autotune_level=2 timeout 110 python3 scripts/bench_quant_matmul.py --m 256 2048 --kinds int4_reference int8 fp8_w8a8_nk fp8_w8a8_nk_bf16 \
  --output "$W/quant_matmul_r1.json" 2>&1 | grep -v "^WARNING\|DeprecationWarning\|getattr(s._pl"
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
[ -n "${WITH_BF16:-}" ] && profile B2sub_bf16 110 "" $SUB
profile B2sub_w8a8kv 110 "" $SUB --quantization fp8 --fp8-activations dynamic --kv-cache-dtype fp8
[ -n "${WITH_INT4:-}" ] && profile DH_bf16 100 "" $DH && profile DH_awq 100 "" $DH --quantization awq
echo "=== B2_w8a8: full B2, W8A8 weights and activations, bf16 KV cache"
timeout 140 python3 -m jaxllm.bench --workload B2 --quantization fp8 --fp8-activations dynamic --gpu-busy \
  --output "$W/B2_w8a8.json" > "$W/B2_w8a8.log" 2>&1 || echo "B2_w8a8 exited with $?"
grep -v "WARNING\|^I1\|^W1\|compiled [0-9]*/" "$W/B2_w8a8.log" | tail -14; pack
echo "total ${SECONDS}s"
