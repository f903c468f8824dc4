#!/usr/bin/env bash
# The GPU machine's one recipe: install offline, then make the runs named as arguments, in order.
#
#   bash scripts/device.sh gpu-tests b2 b2-awq kernels          (from the repository root)
#
# Runs (each writes its JSON and log under $OUT; a short table is printed last):
#   gpu-tests      every @pytest.mark.gpu test under GPU_TESTS (default tests/; PYTEST_K=EXPR selects)  -> gpu-tests.log
#   e2e            greedy tokens and logprobs of the bf16 engine vs fp32 transformers  -> e2e.{json,log}
#   e2e-long       the same with prompts of 2100-3600 tokens (long-prefill path)       -> e2e-long.{json,log}
#   kernels        attention kernels (scripts/bench_kernels.py; KERNEL_ARGS adds flags) -> kernels/
#   quant          quantized linear layers (scripts/bench_quant_matmul.py)              -> quant_matmul.{json,md}
#   sampler        the sampler alone per sampling setting (scripts/bench_sampler.py; SAMPLER_BASELINE=PATH of
#                  another sampler.py to time beside it)                                -> sampler.{json,log}
#   rss            peak host memory while loading the 8B checkpoint (scripts/load_rss_probe.py) -> rss.json
#   weights        update_weights / sleep / wake_up at 8B dims (scripts/bench_weight_sync.py) -> weights.json
#   load           8B load time from safetensors vs Orbax (scripts/bench_load.py)       -> load.json
#   peaks          the card's bf16 matmul FLOP/s and copy bandwidth (scripts/device_peaks.py) -> peaks.json
#   host-bw        host <-> device bandwidth of the KV host tier (scripts/host_bandwidth.py) -> host_bw.json
#   grouped-gemm   the MoE grouped matmul vs dense GEMM (scripts/bench_grouped_matmul.py)  -> grouped_matmul_*.{json,md}
#   embed-bert / embed-qwen3   embedding throughput vs transformers (jaxllm bench --workload E-bert|E-qwen3 --peer hf)
#   embed-batches  E-bert's batch plan, embed's phases and each program's device time (scripts/embed_batches.py)
#                  -> embed-batches.log
#   embed-profile  E-bert under jax.profiler, its kernels by category -> embed-profile-kernels.{json,txt}
#   profile-PRESET the preset under jax.profiler, then its kernels by category (scripts/profile_summary.py)
#                  -> profile-PRESET.json (the bench row) and profile-PRESET-kernels.{json,txt}
#   PRESET         a throughput row of benchmarks/README.md (jaxllm/bench/presets.py: b1, b2, b2-awq, ...)
#                  -> throughput/PRESET.{json,log}; BENCH_ARGS adds `jaxllm bench` flags to every preset;
#                  structured presets get `--tokenizer .benchtok` when that folder was carried (the machine has
#                  no hub: python -c "from jaxllm.bench.structured import save_default_tokenizer as s; s('.benchtok')")
#
# DEADLINE (seconds from the start, default 570) bounds the whole call: each run gets its own limit or what is
# left, whichever is smaller, and a run with under 60 s left is skipped. Wheels under .whl/ (carried to the
# machine, which has no network) are installed first.
set -uo pipefail
OUT=${OUT:-/tmp/out}
DEADLINE=${DEADLINE:-570}
mkdir -p "$OUT/throughput"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || echo "editable install failed"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/gpus.txt"
BUSY=$(command -v nvidia-smi > /dev/null && echo --gpu-busy)  # GPU busy % sampled by nvidia-smi during generate
NGPUS=$(nvidia-smi -L 2> /dev/null | grep -c "^GPU")
SUMMARY=()

limit_for() {  # limit_for WANTED_S: the smaller of WANTED_S and the time left before DEADLINE
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

step() {  # step NAME WANTED_S HEADLINE_CMD -- CMD...: run CMD under its limit into $OUT/NAME.log, record a row
  local name=$1 want=$2 headline=$3 limit t0=$SECONDS rc
  shift 4
  limit=$(limit_for "$want")
  if [ "$limit" -lt 60 ]; then SUMMARY+=("$name|skipped (${SECONDS}s used)|0|-"); return; fi
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -4 "$OUT/$name.log"
  SUMMARY+=("$name|$([ $rc = 0 ] && echo ok || echo "exit $rc")|$((SECONDS - t0))|$(eval "$headline" 2>/dev/null)")
}

json_field() {  # json_field FILE EXPR: a Python expression over the JSON object `r`
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

for run in "$@"; do
  case "$run" in
    gpu-tests)  # shellcheck disable=SC2086
      step gpu-tests 300 "tail -1 '$OUT/gpu-tests.log'" -- \
        python3 -m pytest -q -rfE -m gpu -p no:cacheprovider ${PYTEST_K:+-k "$PYTEST_K"} ${GPU_TESTS:-tests/} ;;
    e2e)
      step e2e 150 "json_field '$OUT/e2e.json' 'r[\"prompts_with_16_identical_greedy_tokens\"]'" -- \
        python3 scripts/e2e_check.py --output "$OUT/e2e.json" ;;
    e2e-long)
      step e2e-long 150 "json_field '$OUT/e2e-long.json' 'r[\"prompts_with_16_identical_greedy_tokens\"]'" -- \
        python3 scripts/e2e_check.py --prompt-len 2100 3600 --max-num-batched-tokens 4096 \
        --output "$OUT/e2e-long.json" ;;
    kernels)
      # shellcheck disable=SC2086
      step kernels 330 "ls '$OUT/kernels'" -- python3 scripts/bench_kernels.py --out-dir "$OUT/kernels" ${KERNEL_ARGS:-} ;;
    quant)
      step quant 200 "echo see quant_matmul.md" -- \
        python3 scripts/bench_quant_matmul.py --output "$OUT/quant_matmul.json" ;;
    sampler)  # shellcheck disable=SC2086
      step sampler 300 "echo see sampler.log" -- python3 scripts/bench_sampler.py --json "$OUT/sampler.json" \
        ${SAMPLER_BASELINE:+--baseline-module "$SAMPLER_BASELINE"} ;;
    rss)
      step rss 300 "json_field '$OUT/rss.json' '[round(x.get(\"peak_rss_bytes\", 0) / 2**30, 2) for x in r[\"runs\"]]'" -- \
        python3 scripts/load_rss_probe.py --workload B2 --tp 1 --output "$OUT/rss.json" ;;
    weights)
      step weights 240 "json_field '$OUT/weights.json' 'r[\"median_update_weights_s\"]'" -- \
        python3 scripts/bench_weight_sync.py --config llama-3.1-8b --output "$OUT/weights.json" ;;
    load)
      step load 300 "json_field '$OUT/load.json' '(r[\"safetensors_load_s\"], r[\"orbax_load_s\"])'" -- \
        python3 scripts/bench_load.py --config llama-3.1-8b --output "$OUT/load.json" ;;
    peaks)
      step peaks 90 "tail -1 '$OUT/peaks.log'" -- python3 scripts/device_peaks.py --output "$OUT/peaks.json" ;;
    host-bw)
      step host-bw 120 "echo see host_bw.json" -- python3 scripts/host_bandwidth.py --output "$OUT/host_bw.json" ;;
    grouped-gemm)
      step grouped-gemm 240 "ls '$OUT'/grouped_matmul_*" -- \
        python3 scripts/bench_grouped_matmul.py --out-dir "$OUT" --tag "${GEMM_TAG:-gpu}" ;;
    embed-bert|embed-qwen3)
      wl=$([ "$run" = embed-bert ] && echo E-bert || echo E-qwen3)
      step "$run" 300 "echo see $run.json" -- \
        python3 -m jaxllm.bench --workload "$wl" --peer hf --output "$OUT/$run.json" ;;
    embed-batches)
      step "$run" 300 "tail -1 '$OUT/$run.log'" -- python3 scripts/embed_batches.py --run ;;
    embed-profile)
      step "$run" 300 "echo see $run-kernels.txt" -- bash -c "python3 -m jaxllm.bench --workload E-bert \
        --profile-dir /tmp/$run --output $OUT/$run.json && python3 scripts/profile_summary.py /tmp/$run \
        --json $OUT/$run-kernels.json > $OUT/$run-kernels.txt" ;;
    profile-*)
      p=${run#profile-}
      step "$run" 300 "echo see $run-kernels.txt" -- bash -c "python3 -m jaxllm.bench --preset $p \
        --profile-dir /tmp/$run --output $OUT/$run.json && python3 scripts/profile_summary.py /tmp/$run \
        --steps \$(python3 -c 'import json; print(json.load(open(\"$OUT/$run.json\"))[\"jaxllm\"][\"steps\"])') \
        --json $OUT/$run-kernels.json > $OUT/$run-kernels.txt" ;;
    *)
      read -r want gpus structured < <(python3 -c "from jaxllm.bench.presets import PRESETS as P; p = P['$run']; \
print(p.limit_s, p.gpus, int('--structured' in p.args))" 2> /dev/null)
      if [ -z "$want" ]; then SUMMARY+=("$run|unknown run|0|-"); continue; fi
      # (without nvidia-smi, a CPU smoke run, nothing is skipped for its GPU count)
      if [ "$NGPUS" -gt 0 ] && [ "$gpus" -gt "$NGPUS" ]; then SUMMARY+=("$run|skipped: needs $gpus GPUs|0|-"); continue; fi
      # shellcheck disable=SC2086
      step "throughput/$run" "$want" \
        "json_field '$OUT/throughput/$run.json' '\"%.0f output tok/s\" % r[\"jaxllm\"][\"output_tok_s\"]'" -- \
        python3 -m jaxllm.bench --preset "$run" $BUSY ${BENCH_ARGS:-} \
        $([ "$structured" = 1 ] && [ -d .benchtok ] && echo --tokenizer .benchtok) \
        --output "$OUT/throughput/$run.json" ;;
  esac
done

if compgen -G "$OUT/throughput/*.json" > /dev/null; then
  python3 -m jaxllm.bench --summarize "$OUT" --same-machine > /dev/null 2>&1 || echo "summary failed"
  sed -n '/^| preset/,/^$/p' "$OUT/README.md"
fi
printf '%-28s %-22s %6s  %s\n' run status s result
for row in "${SUMMARY[@]}"; do
  IFS='|' read -r name status secs head <<< "$row"
  printf '%-28s %-22s %6s  %s\n' "$name" "$status" "$secs" "$head"
done
echo "total ${SECONDS}s"
