#!/usr/bin/env bash
# Session 6, first call on one H200 (~8 minutes by its limits), from the repository root:
#   1. the bf16-output W8A8 GPU test (tests/quantization/test_fp8_gpu.py), never run on a GPU before
#   2. bf16 GEMMs at 256 / 2048 rows with K split 1, 2, 4 ways (q/o, fused qkv, gate_up, down)
#   3. int4 linear layers at 1 / 16 / 64 rows (the memory-bound decode range) against bf16
#   4. the attention kernel benchmark with the prefill tile sweep (#4)
#   5. decode-heavy B2 at 64 requests (memory-bound decode), bf16 then AWQ int4
# Everything lands in $OUT/s6 and one archive $OUT/s6_probe.tgz.
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup s6
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. fp8 GPU tests"
TAIL=4 gpu_tests fp8_gpu_tests 120 tests/quantization/test_fp8_gpu.py
echo "=== 2. bf16 split-K GEMMs"
timeout 110 python3 scripts/bench_quant_matmul.py --m 256 2048 --shapes q_o qkv gate_up down \
  --kinds bf16 bf16_splitk2 bf16_splitk4 --output "$W/quant_matmul_h200_bf16_splitk.json" 2>&1 | grep -v Warning
echo "=== 3. int4 at small M"
timeout 120 python3 scripts/bench_quant_matmul.py --m 1 16 64 --shapes gate_up down q_o \
  --kinds bf16 int4_reference int4_pallas --output "$W/quant_matmul_h200_int4_small_m.json" 2>&1 | grep -v Warning
echo "=== 4. attention kernels + prefill sweep"
timeout 220 python3 scripts/bench_kernels.py --sweep --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^| \(decode\|prefill\|mixed\)" "$W/kernels_h200.md" | head -30
grep "^sweep" "$W/bench_kernels.log" | grep prefill | sed 's/sweep //'
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 100 -- "${DH64[@]}"
b2_run DH64_awq 100 -- "${DH64[@]}" --quantization awq
pack s6_probe.tgz && rm -f "$W"/*.log "$W"/*.md
echo "total ${SECONDS}s"
