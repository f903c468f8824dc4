#!/usr/bin/env bash
# Prepared in session 7 (branch s7-mosaic-prefill) for a device call (~5 minutes by its limits), from the
# repository root (#4: prefill 312 TFLOP/s at 1 x 8k, target 350; JAX's dense Mosaic GPU FA3 reached 570):
#   1. GPU tests of the WIP paged Mosaic GPU prefill (never compiled for a GPU yet: expect to debug here)
#   2. the attention benchmark, whose prefill rows now also time it (`mosaic_TFLOPs`) next to ours and cuDNN
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup mpf
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests"
TAIL=30 gpu_tests mosaic_prefill_gpu_tests 150 tests/ops/test_paged_attention_mosaic_gpu.py -x
echo "=== 2. attention benchmark"
timeout 130 python3 scripts/bench_kernels.py --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^prefill" "$W/bench_kernels.log" | cut -c1-400
pack mosaic_prefill.tgz
echo "total ${SECONDS}s"
