#!/usr/bin/env bash
# Session 8, call 4 (~9 minutes by its limits), from the repository root:
#   1. GPU tests of the paged Mosaic GPU prefill (output now gathered, not scattered)
#   2. the attention benchmark (prefill rows: ours / Mosaic / cuDNN / JAX's FA3)
#   3. B2 bf16: the Triton prefill (default) against JAXLLM_ATTENTION_IMPL=pallas_mosaic (#4 integration)
#   4. decode-heavy B2 at 64 requests: bf16, AWQ, GPTQ (#8, a second same-machine set after call 1's 1.07x)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup c4
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. Mosaic prefill GPU tests"
TAIL=4 gpu_tests mosaic_prefill_gpu_tests 100 tests/ops/test_paged_attention_mosaic_gpu.py -x
pack c4.tgz
echo "=== 2. attention benchmark"
timeout 130 python3 scripts/bench_kernels.py --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^prefill\|^mixed" "$W/bench_kernels.log" | cut -c1-400
pack c4.tgz
echo "=== 3. B2 bf16, Triton vs Mosaic prefill"
b2_run B2_bf16 110 -- ; pack c4.tgz
b2_run B2_bf16_mosaic 120 JAXLLM_ATTENTION_IMPL=pallas_mosaic -- ; pack c4.tgz
ratio_table B2_bf16 B2_bf16_mosaic
echo "=== 4. decode-heavy B2, 64 requests"
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 90 -- "${DH64[@]}"; pack c4.tgz
b2_run DH64_awq 90 -- "${DH64[@]}" --quantization awq; pack c4.tgz
b2_run DH64_gptq 90 -- "${DH64[@]}" --quantization gptq; pack c4.tgz
ratio_table DH64_bf16 DH64_awq DH64_gptq
echo "total ${SECONDS}s"
