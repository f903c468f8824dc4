#!/usr/bin/env bash
# One device call (H200), run from the repository root: GPU correctness of the int4 (AWQ/GPTQ) kernel against
# the jnp reference (tests/quantization/test_int4_gpu.py) and of fp8 W8A8 (test_fp8_gpu.py), then the linear-layer
# microbenchmark (scripts/bench_quant_matmul.py: int4 fused vs bf16 vs int8/fp8 weight-only vs fp8 W8A8 vs int4
# dequantize+GEMM; Llama-8B gate_up/down, M in 1 16 256 2048). Results land in $OUT: pytest_int4_gpu.txt,
# quant_matmul_h200.json (+ .txt). About 3-4 minutes. TRITON_ANY=1 repeats int8/fp8 under
# --xla_gpu_triton_gemm_any=true (quant_matmul_h200_triton_any.json). TESTS_S / MICRO_S: time limits.
# RUN_B2=1 also runs the B2 throughput workload with random weights: awq, gptq, and fp8 with W8A8
# (JAXLLM_FP8_ACTIVATIONS=dynamic); up to ~4 min each more: b2_awq.json, b2_gptq.json, b2_fp8_w8a8.json.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader
timeout ${TESTS_S:-150} python3 -m pytest tests/quantization/test_int4_gpu.py tests/quantization/test_fp8_gpu.py -q -rs -s -p no:cacheprovider \
  > "$OUT/pytest_int4_gpu.txt" 2>&1 || echo "int4 GPU tests exited with $?"
tail -15 "$OUT/pytest_int4_gpu.txt"
timeout ${MICRO_S:-150} python3 scripts/bench_quant_matmul.py --output "$OUT/quant_matmul_h200.json" 2>&1 \
  | grep -v "^WARNING\|DeprecationWarning\|getattr(s._pl" | tee "$OUT/quant_matmul_h200.txt" || true
if [ -n "${TRITON_ANY:-}" ]; then  # does XLA fuse the int8/fp8 -> bf16 convert into a Triton GEMM when told to?
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_triton_gemm_any=true" timeout 90 python3 scripts/bench_quant_matmul.py \
    --m 1 256 --kinds int8 fp8 --output "$OUT/quant_matmul_h200_triton_any.json" 2>&1 \
    | grep -v "^WARNING\|DeprecationWarning\|getattr(s._pl" | tee "$OUT/quant_matmul_h200_triton_any.txt" || true
fi
if [ -n "${RUN_B2:-}" ]; then
  for q in awq gptq fp8_w8a8; do
    act=none; method=$q
    if [ "$q" = fp8_w8a8 ]; then act=dynamic; method=fp8; fi
    JAXLLM_FP8_ACTIVATIONS=$act timeout 280 python3 -m jaxllm.bench --workload B2 --quantization "$method" \
      --output "$OUT/b2_$q.json" > "$OUT/b2_$q.log" 2>&1 || echo "bench B2 $q exited with $?"
    grep -v "^WARNING" "$OUT/b2_$q.log" | tail -16
  done
fi
