#!/bin/bash
# One-shot device run for the attention kernels (run from the repo root on the GPU machine):
# environment facts, the GPU tests, then scripts/bench_kernels.py. Logs and results go to $OUT (or ./out).
#   device tool: run(command="bash scripts/gpu_kernels.sh", timeout_s=590)
# Step budgets (seconds) can be set with TESTS_S / BENCH_S; BENCH_ARGS adds bench flags (e.g. --sweep, --fp8-kv,
# --fp8-kv-only); TESTS_K selects GPU tests by pytest -k expression (e.g. TESTS_K=fp8).
set -o pipefail
OUT=${OUT:-./out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || echo "editable install failed"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv,noheader
python3 -c "import jax, jaxllm.ops; d=jax.devices()[0]; print('jax', jax.__version__, d.device_kind, d.compute_capability)"
if [ "${TESTS_S:-200}" != 0 ]; then
  timeout "${TESTS_S:-200}" python3 -m pytest tests/ops/test_paged_attention_gpu.py -q -rfE --maxfail=6 \
    ${TESTS_K:+-k "$TESTS_K"} \
    -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
timeout "${BENCH_S:-330}" python3 scripts/bench_kernels.py --out-dir "$OUT" ${BENCH_ARGS} 2>&1 | tee "$OUT/bench.log" \
  | grep -v "^decode {\|^prefill {\|^sweep {\|^mixed {\|^write_kv_cache {\|^ceilings {\|^fp8_kv {"
echo "exit codes: ${PIPESTATUS[*]}"
