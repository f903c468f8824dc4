#!/usr/bin/env bash
# Prepared in session 7 (branch s7-int4-qkv-group) for the next device call (~8 minutes by its limits), from the
# repository root (#8: int4 decode-heavy at 0.97-1.00x bf16; the small q / k / v products carry ~10 us of fixed
# cost each, so they run as one grouped Mosaic GPU launch on this branch):
#   1. GPU tests of the Mosaic GPU kernel, the grouped q / k / v launch included
#   2. q / k / v at 16 / 64 rows: bf16 as the model runs it (three GEMMs), one fused 6144-wide bf16 GEMM, three
#      Mosaic launches, one 6144-wide Mosaic launch, the grouped launch at its plan and 1-16 splits
#   3. decode-heavy B2 at 64 requests, bf16 then AWQ (same machine), then a kernel trace of AWQ (256 outputs)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup grp
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
echo "=== 1. GPU tests"
TAIL=6 gpu_tests int4_mosaic_gpu_tests 150 tests/quantization/test_int4_mosaic_gpu.py
echo "=== 2. q / k / v"
timeout 100 python3 scripts/bench_quant_matmul.py --m 16 64 --shapes qkv \
  --kinds bf16 bf16_qkv3 int4_mosaic int4_mosaic_qkv3 int4_mosaic_group \
  --output "$W/quant_matmul_h200_qkv_group.json" 2>&1 | grep -v Warning; pack int4_group.tgz
echo "=== 3. decode-heavy B2, 64 requests"
DH64=(--num-requests 64 --prompt-len 64 128)
b2_run DH64_bf16 100 -- "${DH64[@]}" --output-len 1024 1024; pack int4_group.tgz
b2_run DH64_awq 100 -- "${DH64[@]}" --output-len 1024 1024 --quantization awq; pack int4_group.tgz
ratio_table DH64_bf16 DH64_awq
b2_run DH64s_awq 80 --profile -- "${DH64[@]}" --output-len 256 256 --quantization awq; pack int4_group.tgz
echo "total ${SECONDS}s"
