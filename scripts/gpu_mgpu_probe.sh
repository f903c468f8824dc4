#!/usr/bin/env bash
# Prepared in session 6 for the next device call (~5.5 minutes by its limits), from the repository root: how far
# JAX's own Mosaic GPU (wgmma/TMA, warp-specialized) kernels get on our shapes, to decide whether our int4
# matmul (#8) and paged prefill (#4) should move to Mosaic GPU.
#   1. linear layers at 16 / 64 rows with sustained timing: bf16 (XLA), int8 through XLA, int8 through JAX's
#      Hopper mixed-type kernel with the weight as the register operand (int8_mgpu_t), our int4 kernel
#   1b. int4 at 128 / 256 rows with sustained timing: our kernel vs XLA's dequantize + GEMM (the dispatcher
#      sends > 64 rows to the latter; single-call timing had the kernel ahead at 128 rows)
#   2. the attention benchmark: prefill rows gain JAX's Mosaic GPU FlashAttention-3 (dense, causal) next to
#      cuDNN and ours (target: ours >= 350 TFLOP/s at 1 x 8k)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup mgpu
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. linear layers"
timeout 120 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes gate_up down q_o k_v \
  --kinds bf16 int8 int8_mgpu_t int4_pallas --output "$W/quant_matmul_h200_mgpu.json" 2>&1 | grep -v Warning
echo "=== 1b. int4 at 128 / 256 rows: our kernel against XLA's dequantize + GEMM (where KERNEL_MAX_ROWS should be)"
timeout 90 python3 scripts/bench_quant_matmul.py --m 128 256 --shapes gate_up down \
  --kinds bf16 int4_reference int4_pallas --output "$W/quant_matmul_h200_int4_rows.json" 2>&1 | grep -v Warning
echo "=== 2. attention kernels"
timeout 110 python3 scripts/bench_kernels.py --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^| \(prefill\|decode\|mixed\)\|^| 1 ×\|^| 8 ×\|^| 128 | 2048" "$W/kernels_h200.md" | head -12
pack mgpu_probe.tgz
echo "total ${SECONDS}s"
