#!/usr/bin/env bash
# One call on nvidia-h200-x4 (about 9 minutes), from the repository root. Results: $OUT/results.tgz (JSON + logs).
# Phase A, three jobs side by side on separate GPUs (their host work shares 64 cores; each bench reports the
# GPU it ran on):
#   GPUs 0,1  peak host RSS while loading the Llama-8B dims at TP=1 and TP=2 (scripts/load_rss_probe.py)     #6
#   GPU 2     B2 with AWQ int4, then a decode-heavy B2 variant (256 requests, prompts 64-128, 1024 out) AWQ  #8
#   GPU 3     fp8 W8A8 layouts in the linear microbenchmark, then the decode-heavy variant in bf16          #8
# Phase B, all four GPUs: B2 at TP=4 with the default gpu_memory_utilization, then Llama-3.1-70B dims at TP=4. #6
set -uo pipefail
OUT=${OUT:-/tmp/out}; W="$OUT/work"; mkdir -p "$W"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
nvidia-smi --query-gpu=index,name,memory.used,clocks.sm --format=csv,noheader
DECODE_HEAVY="--workload B2 --num-requests 256 --prompt-len 64 128 --output-len 1024 1024"

bench() {  # NAME GPUS SECONDS ARGS...: one jaxllm bench run, its table printed at the end
  local name=$1 gpus=$2 secs=$3; shift 3
  echo "$name: jaxllm bench $* (GPUs $gpus)" > "$W/$name.cmd"
  CUDA_VISIBLE_DEVICES=$gpus timeout "$secs" python3 -m jaxllm.bench "$@" --output "$W/$name.json" \
    > "$W/$name.log" 2>&1 || echo "$name exited with $?" >> "$W/$name.cmd"
}

( CUDA_VISIBLE_DEVICES=0,1 timeout 230 python3 scripts/load_rss_probe.py --workload B2 --tp 1 2 \
    --output "$W/load_rss_B2.json" > "$W/load_rss_B2.log" 2>&1 || echo "load_rss exited with $?" >> "$W/load_rss_B2.log" ) &
( bench B2_awq 2 150 --workload B2 --quantization awq --gpu-busy
  bench B2dh_awq 2 100 $DECODE_HEAVY --quantization awq --gpu-busy ) &
( CUDA_VISIBLE_DEVICES=3 timeout 100 python3 scripts/bench_quant_matmul.py --m 16 256 2048 \
    --kinds fp8_w8a8 fp8_w8a8_nk fp8_w8a8_nk_bf16 --output "$W/quant_matmul_fp8_layouts.json" \
    > "$W/quant_matmul_fp8_layouts.log" 2>&1
  bench B2dh_bf16 3 120 $DECODE_HEAVY --gpu-busy ) &
wait
tar czf "$OUT/results.tgz" -C "$W" .
bench B2_tp4 0,1,2,3 140 --workload B2 --tensor-parallel-size 4 --gpu-busy
tar czf "$OUT/results.tgz" -C "$W" .
bench L70_tp4 0,1,2,3 200 --config benchmarks/configs/llama-3.1-70b.json --num-requests 256 --prompt-len 100 1024 \
  --output-len 256 256 --tensor-parallel-size 4 --gpu-busy
tar czf "$OUT/results.tgz" -C "$W" .

for f in "$W"/*.cmd; do cat "$f"; grep -v "WARNING\|^I0000\|^W0000\|^W1\|cuda_timer" "${f%.cmd}.log" | tail -14; done
grep -v "WARNING" "$W/load_rss_B2.log" | tail -5
grep -v "WARNING\|Deprecation\|getattr" "$W/quant_matmul_fp8_layouts.log" | tail -12
