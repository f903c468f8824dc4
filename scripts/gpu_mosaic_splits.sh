#!/usr/bin/env bash
# Session 7, device call 5 (~6 minutes), from the repository root: does less split-K for the short-K, few-tile
# products (q/k/v/o_proj: 32 K steps) help the decode-heavy AWQ run (call 4: 0.97x bf16)?
#   1. decode-heavy B2 at 64 requests: bf16, then AWQ with the Mosaic plan patched (in this copy of the tree
#      only) to keep >= 16 K steps per split (q_o: 4 -> 2 splits, k_v: 8 -> 2), then AWQ as committed
#   2. linear layers q_o / k_v / down at 16 / 64 rows: the Mosaic plan against 1-16 splits
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup ms
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 100 -- "${DH64[@]}"; pack mosaic_splits.tgz
cp ops/quant_matmul/mosaic_gpu.py /tmp/mosaic_gpu.py.orig
sed -i 's|k_steps // s >= 4 and|k_steps // s >= 16 and|' ops/quant_matmul/mosaic_gpu.py
grep -c "k_steps // s >= 16" ops/quant_matmul/mosaic_gpu.py
b2_run DH64_awq_min16 100 -- "${DH64[@]}" --quantization awq; pack mosaic_splits.tgz
cp /tmp/mosaic_gpu.py.orig ops/quant_matmul/mosaic_gpu.py
ratio_table DH64_bf16 DH64_awq_min16
timeout 100 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes q_o k_v down --kinds bf16 int4_mosaic \
  --output "$W/quant_matmul_h200_mosaic_splits.json" 2>&1 | grep -v Warning; pack mosaic_splits.tgz
b2_run DH64_awq 100 -- "${DH64[@]}" --quantization awq; pack mosaic_splits.tgz
ratio_table DH64_bf16 DH64_awq_min16 DH64_awq
echo "total ${SECONDS}s"
