#!/usr/bin/env bash
# Cold start-up of benchmark presets with and without background_compile, each run in a fresh process with an empty
# JAX compilation cache (JAX_COMPILATION_CACHE_DIR, which LLM's own cache setting defers to).
#
#   bash scripts/startup_cold.sh decode64-awq:on decode64-awq:off b2-awq:on:300 b2:on:300     (repository root)
#
# Each argument is PRESET:MODE[:REQUESTS]: MODE is the bench's --background-compile (on, off, overlap); REQUESTS
# overrides the preset's request count (start-up does not depend on it). Each run writes $OUT/startup/NAME.{json,log}
# (its log has every program's compile time); a table of start-up (LLM returning), every program compiled, compile
# seconds, compilations and output tok/s is printed last. DEADLINE (seconds from the start, default 570) bounds the
# whole call; a run with under 60 s left is skipped.
set -uo pipefail
OUT=${OUT:-/tmp/out}
DEADLINE=${DEADLINE:-570}
mkdir -p "$OUT/startup"
export PYTHONUNBUFFERED=1
ROWS=()
for spec in "$@"; do
  IFS=: read -r preset mode requests <<< "$spec"
  name="$preset-$mode${requests:+-$requests}"
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 60 ]; then ROWS+=("$name|skipped|"); continue; fi
  cache=$(mktemp -d)
  echo "=== $name (limit ${left}s, cache $cache)"
  JAX_COMPILATION_CACHE_DIR=$cache timeout "$left" python3 -m jaxllm.bench --preset "$preset" \
    --background-compile "$mode" ${requests:+--num-requests "$requests"} --output "$OUT/startup/$name.json" \
    > "$OUT/startup/$name.log" 2>&1
  rc=$?
  rm -rf "$cache"
  ROWS+=("$name|$([ $rc = 0 ] && echo ok || echo "exit $rc")|$(python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))['jaxllm']
f = lambda v: '-' if v is None else f'{v:.1f}'
print(f(r['startup_s']), f(r['all_compiled_s']), f(r['compile_s']), r['num_compilations'], f(r['output_tok_s']),
      r['device'], sep='|')" "$OUT/startup/$name.json" 2> /dev/null)")
  tail -3 "$OUT/startup/$name.log"
done
echo "| run | status | start-up s | all compiled s | compile s | compilations | output tok/s | device |"
echo "|---|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do echo "| $row |"; done | tee "$OUT/startup/README.md"
