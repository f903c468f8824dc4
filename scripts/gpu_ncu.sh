#!/usr/bin/env bash
# Prepared in session 8 for one device call (~4 minutes), from the repository root: Nsight Compute on the kernels
# whose bound is not understood (H200.md: ncu reads hardware counters on Firecracker machines only, with
# --clock-control none; on gVisor it fails "LibraryNotLoaded", which this script reports and moves on):
#   1. the Mosaic GPU int4 kernel (gate_up, 64 rows): ~1,700 cycles a pipeline step whatever the token tile
#   2. the Triton and the Mosaic GPU prefill at 1 x 8k (310 / 475 TFLOP/s in the kernel benchmark)
set -uo pipefail
source scripts/gpu_lib.sh
gpu_setup ncu
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: ${NCU:-not found}"; ${NCU:-true} --version | tail -1
SECTIONS=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis
          --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats)
for what in int4:int4_matmul prefill_triton:ragged_paged_attention prefill_mosaic:paged_attention_prefill; do
  name=${what%%:*}; regex=${what#*:}
  echo "=== $name (kernels matching $regex)"
  timeout 110 "$NCU" --clock-control none --target-processes all --kernel-name "regex:$regex" --launch-skip 1 \
    --launch-count 1 "${SECTIONS[@]}" python3 scripts/ncu_kernels.py "$name" > "$W/ncu_$name.txt" 2>&1 \
    || echo "$name: ncu exited with $?"
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Stall|Issued Warp|Achieved Occupancy|No Eligible|Registers Per" \
    "$W/ncu_$name.txt" | head -30
  pack ncu.tgz
done
echo "total ${SECONDS}s"
