#!/usr/bin/env bash
# Session 6, third call on one H200 (~9.5 minutes by its limits), from the repository root (run at d720042, with
# ops/pallas_dot_acc.py and a line printing whether its fused lowering was active; both removed after this call):
#   1. all GPU attention tests
#   2. the attention kernel benchmark with the decode and prefill sweeps (#4: prefill 1 x 8k >= 350 TFLOP/s)
#   3. int4 linear layers at 64 rows: the plan's tiles and neighbours
#   4. decode-heavy B2 at 64 requests: bf16, then AWQ int4 (#8: int4 decode faster than bf16)
# Results in $OUT/fin and one archive $OUT/s6_final.tgz.
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup fin
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU attention tests"
TAIL=4 gpu_tests gpu_tests "${TESTS_S:-150}" tests/ops/test_paged_attention_gpu.py --maxfail=4
echo "=== 2. attention kernels + sweeps"
timeout ${BENCH_S:-170} python3 scripts/bench_kernels.py --sweep --out-dir "$W" > "$W/bench_kernels.log" 2>&1
grep "^| \(decode\|prefill\|mixed\)" "$W/kernels_h200.md" | head -24
grep "^sweep" "$W/bench_kernels.log" | sed 's/sweep //' | cut -c1-170
echo "=== 3. int4 at 64 rows"
timeout 60 python3 scripts/bench_quant_matmul.py --m 64 --shapes gate_up down q_o --kinds bf16 int4_pallas \
  --output "$W/quant_matmul_h200_int4_m64.json" 2>&1 | grep -v Warning
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
b2_run DH64_bf16 90 -- "${DH64[@]}"
b2_run DH64_awq 90 -- "${DH64[@]}" --quantization awq
pack s6_final.tgz && rm -f "$W"/*.log "$W"/*.md
echo "total ${SECONDS}s"
