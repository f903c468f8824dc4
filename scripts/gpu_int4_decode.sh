#!/usr/bin/env bash
# One call on one H200 (~8 minutes by its limits), from the repository root (#8: int4 decode faster than bf16):
#   1. the int4 GPU tests (kernel variants against the reference)
#   2. int4 linear layers at 16 / 64 / 128 rows: bf16, XLA's fused reference and the kernel's tile variants
#   3. decode-heavy B2 at 64 requests (memory-bound decode): bf16, then AWQ int4 with the default dispatch
#      (the kernel up to 64 rows), then AWQ with the kernel variant $ALT_VARIANT forced (default split)
# Results in $OUT/i4 and one archive $OUT/int4_decode.tgz; a table printed last.
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup i4
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. int4 GPU tests"
TAIL=6 gpu_tests int4_gpu_tests 150 tests/quantization/test_int4_gpu.py
echo "=== 2. int4 linear layers"
timeout ${MICRO_S:-170} python3 scripts/bench_quant_matmul.py --m ${MS:-16 64 128} --shapes gate_up down q_o \
  --kinds bf16 int4_reference int4_pallas --output "$W/quant_matmul_h200_int4_decode.json" 2>&1 | grep -v Warning
DH64=(--num-requests 64 --prompt-len 64 128 --output-len 1024 1024)
ALT=DH64_awq_${ALT_VARIANT:-split}
b2_run DH64_bf16 100 -- "${DH64[@]}"
b2_run DH64_awq 100 -- "${DH64[@]}" --quantization awq
b2_run "$ALT" 100 JAXLLM_INT4_KERNEL_VARIANT=${ALT_VARIANT:-split} -- "${DH64[@]}" --quantization awq
echo "=== summary"
ratio_table DH64_bf16 DH64_awq "$ALT"
pack int4_decode.tgz && rm -f "$W"/*.log
echo "total ${SECONDS}s"
