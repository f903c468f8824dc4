#!/usr/bin/env bash
# One call on one H200 (~6 minutes by its limits), from the repository root (#8: int4 decode vs bf16):
#   1. decode-heavy B2 at 64 requests, bf16 then AWQ int4 (our kernel up to 64 rows), same machine
#   2. kernel-time breakdowns (scripts/profile_summary.py) of the same workload with 256-token outputs, AWQ then
#      bf16: which int4 GEMMs cost what per step at the engine's clocks (the microbenchmark's short bursts did not
#      keep the GPU at its full clock before session 6's sustained timing)
# Results in $OUT/p and one archive $OUT/int4_profile.tgz.
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup p
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
DH64=(--num-requests 64 --prompt-len 64 128)
b2_run DH64_bf16 90 -- "${DH64[@]}" --output-len 1024 1024; pack int4_profile.tgz
b2_run DH64_awq 80 -- "${DH64[@]}" --output-len 1024 1024 --quantization awq; pack int4_profile.tgz
b2_run DH64s_awq 80 --profile -- "${DH64[@]}" --output-len 256 256 --quantization awq; pack int4_profile.tgz
b2_run DH64s_bf16 80 --profile -- "${DH64[@]}" --output-len 256 256; pack int4_profile.tgz
echo "total ${SECONDS}s"
