#!/usr/bin/env bash
# One call on one H200, from the repository root, ~8 minutes by its limits (#8: fp8 >= 1.4x bf16 on B2).
# Results in $OUT/w8 (JSONs) and $OUT/w8a8_b2.tgz (everything, logs included); a table printed last.
#   1. the fp8 KV kernels: the fp8 decode tile and its float16 tiles (TileConfig.fp8_f16) against the bf16 cache
#   2. the GPU fp8-cache tests, with JAXLLM_PA_FP8_DOT=$FP8_DOT_TESTS (default auto: the engine's own choice)
#   3. B2 runs named in $RUNS (default: bf16; W8A8 + fp8 KV with the default and the forced-float16 attention;
#      W8A8 alone), then a table of them
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup w8
echo "=== fp8 KV kernels (q-dtype vs float16 tiles)"
timeout 120 python3 scripts/bench_kernels.py --fp8-kv-only --out-dir "$W" 2>&1 | grep "^| \(decode\|prefill\)"
echo "=== GPU fp8-cache tests (JAXLLM_PA_FP8_DOT=${FP8_DOT_TESTS:-auto})"
JAXLLM_PA_FP8_DOT=${FP8_DOT_TESTS:-auto} TAIL=3 gpu_tests gpu_tests_fp8 100 tests/ops/test_paged_attention_gpu.py -x -k fp8
W8A8=(--quantization fp8 --fp8-activations dynamic)
RUNS=" ${RUNS:-B2_w8a8_fp8kv B2_w8a8_fp8kv_f16 B2_bf16 B2_w8a8} "
[[ $RUNS == *" B2_w8a8_fp8kv "* ]] && b2_run B2_w8a8_fp8kv 130 -- "${W8A8[@]}" --kv-cache-dtype fp8
[[ $RUNS == *" B2_w8a8_fp8kv_f16 "* ]] && b2_run B2_w8a8_fp8kv_f16 110 JAXLLM_PA_FP8_DOT=f16 -- "${W8A8[@]}" \
  --kv-cache-dtype fp8
[[ $RUNS == *" B2_bf16 "* ]] && b2_run B2_bf16 110 --
[[ $RUNS == *" B2_w8a8 "* ]] && b2_run B2_w8a8 110 -- "${W8A8[@]}"
echo "=== summary"
ratio_table B2_bf16 B2_w8a8 B2_w8a8_fp8kv B2_w8a8_fp8kv_f16
pack w8a8_b2.tgz && rm -f "$W"/*.log "$W"/*.md
echo "total ${SECONDS}s"
