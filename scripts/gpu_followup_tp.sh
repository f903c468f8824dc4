#!/usr/bin/env bash
# One call on nvidia-h200-x2 (about 6-8 minutes), from the repository root: what #6 still owes.
#   1. peak host RSS while loading the Llama-8B dims at TP=1 and TP=2, now with the runtime's RSS before loading
#      (runtime_rss_bytes) so the loader's own share is known
#   2. why TP is host-bound: XLA's launch time per step at TP=2 (scripts/dispatch_probe.py), with XLA's default
#      command buffers and with collectives added to them (all-reduces otherwise split the CUDA graphs)
# Results in $OUT: load_rss_B2.json, dispatch_tp2_*.json, and the logs.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
timeout 240 python3 scripts/load_rss_probe.py --workload B2 --tp 1 2 --output "$OUT/load_rss_B2.json" 2>&1 \
  | grep -v WARNING | tail -4
for variant in default collectives; do
  flags=""
  [ "$variant" = collectives ] && flags="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,COLLECTIVES"
  XLA_FLAGS="$flags" timeout 150 python3 scripts/dispatch_probe.py --workload B2 --tensor-parallel-size 2 \
    --output "$OUT/dispatch_tp2_$variant.json" > "$OUT/dispatch_tp2_$variant.log" 2>&1 || echo "$variant exited with $?"
  tail -1 "$OUT/dispatch_tp2_$variant.log"
done
