# Shared by the one-call device scripts (`source scripts/gpu_lib.sh` from the repository root): the set-up, one
# `jaxllm bench --workload B2` run with its log and optional kernel trace, and the archive of the results (the
# device tool returns a limited number of files, so every script also packs everything into one .tgz).

gpu_setup() {  # gpu_setup SUBDIR: results go to $W = $OUT/SUBDIR; editable install; the GPU's state
  OUT=${OUT:-/tmp/out}; W="$OUT/$1"; mkdir -p "$W"
  export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
  nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.max.sm --format=csv,noheader
}

gpu_tests() {  # gpu_tests NAME LIMIT_S [PYTEST ARGS...]: GPU tests, full output in $W/NAME.log, the tail printed
  timeout "$2" python3 -m pytest -q -rfE -p no:cacheprovider "${@:3}" 2>&1 | tee "$W/$1.log" | tail -"${TAIL:-8}"
}

b2_run() {  # b2_run NAME LIMIT_S [ENV=VALUE ...] [--profile] -- ARGS...
  # `jaxllm bench --workload B2 --gpu-busy ARGS` into $W/NAME.json (log: $W/NAME.log); with --profile also a
  # jax.profiler trace summarized by scripts/profile_summary.py into $W/kernels_NAME.{json,txt} (trace deleted)
  local name=$1 limit=$2 prof="" envs=()
  shift 2
  while [ "$1" != "--" ]; do
    if [ "$1" = "--profile" ]; then prof="$W/trace_$name"; else envs+=("$1"); fi
    shift
  done
  shift
  echo "=== $name: ${envs[*]} jaxllm bench --workload B2 $*"
  env "${envs[@]}" timeout "$limit" python3 -m jaxllm.bench --workload B2 --gpu-busy "$@" \
    ${prof:+--profile-dir "$prof"} --output "$W/$name.json" > "$W/$name.log" 2>&1 || echo "$name exited with $?"
  grep "output tok/s\|start-up\|ms per step\|GPU busy\|ran each" "$W/$name.log"
  if [ -n "$prof" ]; then
    local steps
    steps=$(python3 -c "import json;print(json.load(open('$W/$name.json'))['jaxllm']['steps'])" 2>/dev/null)
    timeout 60 python3 scripts/profile_summary.py "$prof" --top 16 ${steps:+--steps "$steps"} \
      --json "$W/kernels_$name.json" 2>&1 | tee "$W/kernels_$name.txt" | cut -c1-160
    rm -rf "$prof"
  fi
}

ratio_table() {  # ratio_table BASE_NAME NAME...: output tok/s of each $W/NAME.json and its ratio to BASE_NAME's
  python3 - "$W" "$@" <<'PY'
import json, os, sys
w, base, names = sys.argv[1], sys.argv[2], sys.argv[2:]
runs = {n: json.load(open(os.path.join(w, n + ".json")))["jaxllm"] for n in names
        if os.path.exists(os.path.join(w, n + ".json"))}
ref = runs.get(base, {}).get("output_tok_s")
print(f"{'run':24s} {'out tok/s':>10s} {'x ' + base:>12s} {'ms/step':>8s} {'start s':>8s}")
for n, r in runs.items():
    x = r["output_tok_s"] / ref if ref else float("nan")
    print(f"{n:24s} {r['output_tok_s']:10,.0f} {x:12.2f} {r['ms_per_step']:8.2f} {r['startup_s']:8.1f}")
PY
}

pack() {  # pack ARCHIVE: everything under $W into $OUT/ARCHIVE
  tar czf "$OUT/$1" -C "$W" .
}
