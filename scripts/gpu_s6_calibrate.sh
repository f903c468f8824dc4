#!/usr/bin/env bash
# Session 6, calibration call on one H200 (~3.5 minutes by its limits), from the repository root: the two
# microbenchmarks with sustained timing (a 0.3 s warm-up of calls, then bursts), to compare with the engine
# trace of the same shapes (bf16 gate_up at 64 rows: 59 us, our int4 kernel 84 us; kernels_profile_h200.md)
#   1. int4 linear layers at 64 rows (gate_up, down, q_o, k_v): bf16, the kernel's plan and neighbours
#   2. the attention kernel benchmark (#4), no sweep
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup cal
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. int4 at 64 rows, sustained timing"
timeout 100 python3 scripts/bench_quant_matmul.py --m 64 --shapes gate_up down q_o k_v --kinds bf16 int4_pallas \
  --output "$W/quant_matmul_h200_int4_m64_sustained.json" 2>&1 | grep -v Warning
echo "=== 2. attention kernels, with a warm-up"
timeout 110 python3 scripts/bench_kernels.py --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^| \(decode\|prefill\|mixed\)" "$W/kernels_h200.md" | head -24
grep -i "ceiling\|cudnn\|matmul\|copy" "$W/kernels_h200.md" | head -8
pack s6_calibrate.tgz
echo "total ${SECONDS}s"
