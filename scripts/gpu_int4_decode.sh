#!/usr/bin/env bash
# One call on one H200 (~8 minutes by its limits), from the repository root (#8: int4 decode faster than bf16):
#   1. the int4 GPU tests (kernel variants against the reference)
#   2. int4 linear layers at 16 / 64 / 128 rows: bf16, XLA's fused reference and the kernel's tile variants
#   3. decode-heavy B2 at 64 requests (memory-bound decode): bf16, then AWQ int4 with the default dispatch
#      (the kernel up to 64 rows), then AWQ with the kernel variant $ALT_VARIANT forced (default split)
# Results in $OUT/i4 and one archive $OUT/int4_decode.tgz; a table printed last.
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/i4"; mkdir -p "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.max.sm,power.draw --format=csv,noheader
echo "=== 1. int4 GPU tests"
timeout 150 python3 -m pytest tests/quantization/test_int4_gpu.py -q -rfE -p no:cacheprovider 2>&1 \
  | tee "$W/int4_gpu_tests.log" | tail -6
echo "=== 2. int4 linear layers"
timeout ${MICRO_S:-170} python3 scripts/bench_quant_matmul.py --m ${MS:-16 64 128} --shapes gate_up down q_o \
  --kinds bf16 int4_reference int4_pallas --output "$W/quant_matmul_h200_int4_decode.json" 2>&1 | grep -v Warning
bench() {  # bench NAME LIMIT [ENV=VALUE ...] -- ARGS...
  local name=$1 limit=$2; shift 2
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "=== $name: ${envs[*]} jaxllm bench --workload B2 $*"
  env "${envs[@]}" timeout "$limit" python3 -m jaxllm.bench --workload B2 --gpu-busy "$@" --output "$W/$name.json" \
    > "$W/$name.log" 2>&1 || echo "$name exited with $?"
  grep "output tok/s\|start-up\|ms per step\|GPU busy" "$W/$name.log"
}
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
bench DH64_bf16 100 -- "${DH64[@]}"
bench DH64_awq 100 -- "${DH64[@]}" --quantization awq
bench DH64_awq_${ALT_VARIANT:-split} 100 JAXLLM_INT4_KERNEL_VARIANT=${ALT_VARIANT:-split} -- "${DH64[@]}" --quantization awq
echo "=== summary"
python3 - "$W" <<'PY'
import glob, json, os, sys
runs = {os.path.basename(p)[:-5]: json.load(open(p))["jaxllm"] for p in sorted(glob.glob(os.path.join(sys.argv[1], "DH*.json")))}
base = runs.get("DH64_bf16", {}).get("output_tok_s")
for n, r in runs.items():
    x = r["output_tok_s"] / base if base else float("nan")
    print(f"{n:24s} {r['output_tok_s']:10,.0f} tok/s {x:6.2f}x bf16 {r['ms_per_step']:7.2f} ms/step start-up {r['startup_s']:6.1f} s")
PY
tar czf "$OUT/int4_decode.tgz" -C "$W" . && rm -f "$W"/*.log
echo "total ${SECONDS}s"
