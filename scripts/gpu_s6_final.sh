#!/usr/bin/env bash
# Session 6, last call on one H200 (~9.5 minutes by its limits), from the repository root:
#   1. whether the fused dot-with-accumulator lowering is active (ops/pallas_dot_acc.py), then all GPU attention
#      tests (every launch now accumulates PV into acc)
#   2. the attention kernel benchmark with the decode and prefill sweeps (#4: prefill 1 x 8k >= 350 TFLOP/s)
#   3. int4 linear layers at 64 rows: the plan's tiles and neighbours
#   4. decode-heavy B2 at 64 requests: bf16, then AWQ int4 (#8: int4 decode faster than bf16)
# Results in $OUT/fin and one archive $OUT/s6_final.tgz.
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/fin"; mkdir -p "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
nvidia-smi --query-gpu=name,memory.used,clocks.sm,clocks.max.sm --format=csv,noheader
python3 -c "import jax, ops.pallas_dot_acc as d; print('jax', jax.__version__, 'DOT_ACC_FUSED', d.DOT_ACC_FUSED)"
echo "=== 1. GPU attention tests"
timeout ${TESTS_S:-150} python3 -m pytest tests/ops/test_paged_attention_gpu.py -q -rfE --maxfail=4 -p no:cacheprovider \
  2>&1 | tee "$W/gpu_tests.log" | tail -4
echo "=== 2. attention kernels + sweeps"
timeout ${BENCH_S:-170} python3 scripts/bench_kernels.py --sweep --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^| \(decode\|prefill\|mixed\)" "$W/kernels_h200.md" | head -24
grep "^sweep" "$W/bench_kernels.log" | sed 's/sweep //' | cut -c1-170
echo "=== 3. int4 at 64 rows"
timeout 60 python3 scripts/bench_quant_matmul.py --m 64 --shapes gate_up down q_o --kinds bf16 int4_pallas \
  --output "$W/quant_matmul_h200_int4_m64.json" 2>&1 | grep -v Warning
bench() {  # bench NAME LIMIT -- ARGS...
  local name=$1 limit=$2; shift 3
  echo "=== $name: jaxllm bench --workload B2 $*"
  timeout "$limit" python3 -m jaxllm.bench --workload B2 --gpu-busy "$@" --output "$W/$name.json" \
    > "$W/$name.log" 2>&1 || echo "$name exited with $?"
  grep "output tok/s\|start-up\|ms per step" "$W/$name.log"
}
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
bench DH64_bf16 90 -- "${DH64[@]}"
bench DH64_awq 90 -- "${DH64[@]}" --quantization awq
tar czf "$OUT/s6_final.tgz" -C "$W" . && rm -f "$W"/*.log "$W"/*.md
echo "total ${SECONDS}s"
