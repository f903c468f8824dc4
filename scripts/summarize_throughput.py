"""Collect the committed throughput runs (benchmarks/throughput_h200_*.json) into benchmarks/throughput_h200.json
and a Markdown table (benchmarks/throughput_h200.md), with the peer figures of ../shared/BENCHMARKS.md.

    python scripts/summarize_throughput.py
"""

from __future__ import annotations

import glob
import json
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")
# HF transformers 5.17 generate_batch on the same H200 (../shared/BENCHMARKS.md), quoted for comparison with the
# peer runs measured in our own invocations (runs with `--peer hf`).
PEER_OUTPUT_TOK_S = {"B1-peer": 820, "B2-like (256 requests)": 580}
RUN_NOTES = {
    "B1_run1": "commit 34a9565: first engine run",
    "B1_run2": "commit 1221f70: flat parameter leaves + list-based step inputs (host path)",
    "B2_run1": "commit 34a9565: first engine run",
    "B1_run3": "commit 559999c: asynchronous scheduling, packed sampling metadata (cold start)",
    "B1_run4": "commit 559999c: same, --no-async-scheduling (warm start): the sampler's lax.cond synced anyway",
    "B1_run5": "commit 4c1126c: sampler without lax.cond (static variants) + async scheduling (cold start)",
    "B2_run2": "commit 559999c: asynchronous scheduling (cold start)",
    "B2_run3": "commit 559999c: same, --no-async-scheduling (warm start)",
    "B2_run4": "commit 4c1126c: --kv-cache-dtype fp8 (e4m3, scales 1.0): 2x the blocks; roofline recomputed "
               "with 1-byte KV (the run's own figure, 73.2% of a bf16-KV roofline, is kept in the JSON)",
    "B2_run5": "commit 4c1126c: --quantization int8 (weight-only, per channel): slower, XLA converts the weights "
               "before the GEMM instead of fusing",
    "B2_run6": "commit 4c1126c: --quantization fp8 (weight-only e4m3): slower, same reason",
    "B2_run7": "commit 4c1126c: --max-num-seqs 512 --max-num-batched-tokens 16384 (compile cache partly warm); "
               "roofline at 512 seqs",
    "B2_run8": "commit fae1f37: TP=2 on the 4-GPU machine (gpu_memory_utilization 0.85)",
    "B2_run9": "commit fae1f37: TP=4 (gpu_memory_utilization 0.7: at 0.85 the autotuner ran out of memory while "
               "compiling; compile cache partly warm from that attempt)",
    "B2_run10": "commit ca3d99a: with `--peer hf --peer-max-requests 256` (HF generate_batch on the first 256 "
                "requests, same invocation): 542 output tok/s, 16.5x",
    "B1-peer_run1": "commit ca3d99a: with `--peer hf` (HF generate_batch on the same 256 requests, same "
                    "invocation): 777 output tok/s, 36.5x",
    "B2_run11": "commit 504c040: --quantization awq (random packed int4, group 128; XLA's dequantize + GEMM): "
                "slower than bf16; KV cache shrunk after warm-up (6.5 GiB of temporaries); 4-GPU machine, GPU 2 "
                "alone, with other jobs on GPUs 0, 1, 3 and the host",
    "B2_run12": "commit 504c040: TP=4 at the default gpu_memory_utilization 0.9 (compile before the cache: no "
                "autotuner OOM any more)",
    "B2_run13": "commit d49fb70: bf16 baseline of the last device call (one-GPU machine)",
    "B2decode_run1": "commit 504c040: decode-heavy B2 variant (--num-requests 256 --prompt-len 64 128 "
                     "--output-len 1024 1024), bf16; 4-GPU machine, GPU 3 alone, other jobs beside it",
    "B2decode_run2": "commit 504c040: same, --quantization awq: 0.63x bf16 (GPU 98% busy: the int4 GEMMs are slower)",
    "L70_run1": "commit 504c040: Llama-3.1-70B dims, TP=4, 256 requests, prompts 100..1024, output 256",
    "B1_run6": "commit e2edd02: after BlockTableRows (step inputs from per-sequence block-table rows): GPU busy "
               "89% -> 95%, host 5.5 -> 4.7 ms/step (cold start)",
    "B2_run14": "commit e2edd02: W8A8 + fp8 KV under XLA_FLAGS=--xla_gpu_autotune_level=0, right after the default "
                "run was killed: 3 forward programs (256, 512, 8192 tokens) came autotuned from the compile cache, "
                "the other 8 were built without autotuning (slow GEMMs; see fp8_startup_h200.md). A mixed, "
                "low figure, kept for the record; B2_run16 is the clean one",
    "B2_run15": "commit e2edd02: --quantization gptq (random packed int4, group 128, no act-order): 0.77x bf16, "
                "like AWQ (same int4 path)",
    "B2decode64_run1": "commit 79adb0a: decode-heavy B2 at 64 requests (--num-requests 64 --prompt-len 64 128 "
                       "--output-len 1024 1024: 64-row decode steps, weight-read bound), bf16",
    "B2decode64_run2": "commit 79adb0a: same call, --quantization awq through XLA's dequantize + GEMM: 0.44x bf16",
    "B2decode64_run3": "commit bbe7d75: bf16 baseline of the call",
    "B2decode64_run4": "commit bbe7d75: same call, --quantization awq through our int4 kernel up to 64 rows "
                       "(magic-number dequantization, pipelined split_dot / joined tiles, BN 128): 0.83x bf16",
    "B2decode64_run5": "commit bbe7d75: same, JAXLLM_INT4_KERNEL_VARIANT=split forced at 64 rows too: 0.68x bf16",
    "B2decode64_run6": "commit d720042: bf16 baseline of the call",
    "B2decode64_run7": "commit d720042: same call, --quantization awq, int4 plan with BN 64 for the joined tiles: "
                       "0.79x bf16",
    "B2decode64_run8": "commit 864bb63: bf16 baseline of the call (kernel traces of this call: "
                       "kernels_profile_h200_DH64_*.json)",
    "B2decode64_run9": "commit 864bb63: same call, --quantization awq, 4-stage joined tiles without split-K: 0.80x "
                       "bf16; the trace puts our int4 kernels at 5.57 ms per step against 4.08 ms for XLA's bf16 "
                       "GEMMs (gate_up 84 vs 59 us)",
    "B2decode64_run10": "commit 933de9d: bf16 baseline of session 7's call 3 (its AWQ run failed on an 8-row "
                        "decode bucket: the Mosaic kernel's 16-byte output tile, fixed in f278738)",
    "B2decode64_run11": "commit f278738: bf16 baseline of the call",
    "B2decode64_run12": "commit f278738: same call, --quantization awq through the Mosaic GPU int4 kernel (nk layout, "
                        "the Hopper default up to 256 rows): 0.97x bf16 (0.80x with the Triton kernel)",
    "B2decode64_run13": "commit f278738: same call, --quantization gptq (same kernel): 1.00x bf16",
    "B2decode64_run14": "commit f467bb3: bf16 baseline of session 7's call 5",
    "B2decode64_run15": "commit f467bb3: same call, --quantization awq with the Mosaic plan patched in the device's "
                        "copy only to keep >= 16 K steps per split (q/k/v/o: fewer splits): 0.93x bf16, not kept",
    "B2decode64_run16": "commit f467bb3: same call, --quantization awq as committed (Mosaic GPU int4 kernel): "
                        "1.00x bf16 (9,440 vs 9,404)",
    "B2decode64_run17": "commit 6087296 (session 8, call 1): bf16 baseline of the call",
    "B2decode64_run18": "commit 6087296: same call, --quantization awq with q / k / v in one grouped Mosaic GPU "
                        "launch (int4_matmul_mosaic_group): 1.07x bf16 (10,092 vs 9,458); kernel trace of the "
                        "256-output variant: kernels_profile_h200_DH64s_awq_s8.json",
    "B2decode64_run19": "commit 35e8463 (session 8, call 4; main 976187c + the Mosaic prefill branch, which decode "
                        "steps do not use): bf16 baseline of the call",
    "B2decode64_run20": "commit 35e8463: same call, --quantization awq (grouped q/k/v Mosaic launch): 1.10x bf16",
    "B2decode64_run21": "commit 35e8463: same call, --quantization gptq: 1.09x bf16",
    "B2long8k_run1": "commit 7c7254f (session 8, call 5; main 36a1193's code): long prompts (--num-requests 16 "
                     "--prompt-len 8192 8192 --output-len 8 8), bf16, Triton prefill (the default)",
    "B2long8k_run2": "commit 7c7254f: same call, JAXLLM_ATTENTION_IMPL=pallas_mosaic (sequences of >= 2048 new "
                     "tokens through the Mosaic GPU prefill): 1.01x (4.008 vs 4.035 s), where the kernel benchmark's "
                     "1 x 8k (1158 vs 1775 us a layer) predicts ~8%; not explained (no trace: device time spent)",
    "B2decode_run3": "commit e2edd02: decode-heavy, --quantization awq, after int4_linear's one 2-D product per "
                     "shard: 0.62x bf16, unchanged; a trace of the 256-output variant shows why: XLA dequantizes "
                     "each int4 weight to a bf16 copy every step (converts: 8.6 ms per step; kernels_profile_h200.md)",
    "B2decode_run4": "commit b5a2032 (session 9, call 1, scripts/gpu_int4_b2.sh): decode-heavy at 256 requests, bf16",
    "B2decode_run5": "commit b5a2032: same call, --quantization awq (Mosaic GPU int4 kernel, tm 256 plan, grouped "
                     "q/k/v): 0.96x bf16 (0.62x before the kernel, B2decode_run3)",
    "B2decode64_run22": "commit 1d34910 (session 9, call 2, scripts/gpu_int4_y_epilogue.sh): bf16",
    "B2decode64_run23": "commit 1d34910: same call, --quantization awq, the int4 kernel writing y instead of y^T "
                        "(no XLA transposes): 1.17x bf16 (1.07-1.10x in session 8)",
    "B2decode_run6": "commit 1d34910 (session 9, call 2): decode-heavy at 256 requests, --quantization awq, y "
                     "epilogue: 17,707 tok/s, 1.01x call 1's bf16 (B2decode_run4, another machine; no same-call bf16)",
    "B2long8k_run3": "commit 02750c8 (session 9, call 3, scripts/gpu_s9_call3.sh; page ids read once per tile): "
                     "long prompts, Triton prefill, with a kernel trace (kernels_profile_h200_L8k_triton_s9.json)",
    "B2long8k_run4": "commit 02750c8: same call, JAXLLM_ATTENTION_IMPL=pallas_mosaic, traced: 0.95x wall; kernel "
                     "time 3,831 vs 3,950 ms (attention -272 ms, new select/gather fusions +96 ms), GPU busy 83.5 "
                     "vs 87.6%: the kernel's gain is 3% of the step's GPU time, within the wall-clock noise",
    "B2_run31": "commit 02750c8 (session 9, call 3): --quantization awq with the Mosaic GPU int4 kernel at every "
                "row count (JAXLLM_QUANT_MATMUL_IMPL=mosaic_gpu), y epilogue, tk 256 plan; no same-call bf16 "
                "(call 1's: 8,860 on another machine)",
    "B2decode64_run24": "commit b806307 (session 9, call 4, scripts/gpu_s9_call4.sh; y epilogue, tk 256 plan up to "
                        "64 rows): bf16",
    "B2decode64_run25": "commit b806307: same call, --quantization awq: 1.18x bf16",
    "B2decode_run7": "commit b806307 (session 9, call 4): decode-heavy at 256 requests, bf16",
    "B2decode_run8": "commit b806307: same call, --quantization awq: 1.02x bf16 (0.96x before the y epilogue, "
                     "B2decode_run5)",
    "B2_run29": "commit b5a2032 (session 9, call 1, scripts/gpu_int4_b2.sh): bf16",
    "B2_run30": "commit b5a2032: same call, --quantization awq: 0.95x bf16 (0.77x in session 6); prefill chunks "
                "above 256 rows use XLA's dequantize + GEMM",
    "B2long8k_run5": "commit 85a7a64 (session 10, call 1, scripts/gpu_first_run_probe.sh; the runner now executes "
                     "each program once at start-up): long prompts, Triton prefill: host ms per step 7.2 (45.4 in "
                     "B2long8k_run3, before the first runs moved to start-up)",
    "B2long8k_run6": "commit 85a7a64: same call, JAXLLM_ATTENTION_IMPL=pallas_mosaic: 1.03x wall (160.5 vs 165.2 "
                     "ms per step)",
    "B2long8k_run7": "commit 85a7a64: same call, XLA_FLAGS=--xla_gpu_enable_command_buffer= (CUDA command buffers "
                     "off), Triton prefill: host ms per step 58.8, same wall",
    "B2long8k_run8": "commit 85a7a64: same call, command buffers off, JAXLLM_ATTENTION_IMPL=pallas_mosaic: 1.03x "
                     "run7 (host ms per step 92.3: more launches, hidden behind the GPU)",
    "B2long8k_run9": "commit 85a7a64: same call, repeat of run5 (Triton prefill)",
    "B2long8k_run10": "commit 85a7a64: same call, repeat of run6 (pallas_mosaic): 1.04x run9",
    "B2longmix_run1": "commit 1a28ce7 (session 10, call 2, DEADLINE=460 bash scripts/gpu_s10_mosaic_default.sh): a long-prompt mix "
                      "(--num-requests 64 --prompt-len 2048 8192 --output-len 128 256), "
                      "JAXLLM_ATTENTION_IMPL=pallas_triton",
    "B2longmix_run2": "commit 1a28ce7: same call, the default (Mosaic GPU prefill for >= 2048 new tokens on "
                      "Hopper): 1.02x run1 (43.14 vs 44.15 ms per step); start-up 61.8 s, the call's first, cold "
                      "compile cache (run1: 16.1 s, warm)",
    "B2long8k_run11": "commit 1a28ce7: same call, the default (no JAXLLM_ATTENTION_IMPL): 161.6 ms per step, as "
                      "call 1's forced pallas_mosaic (160-161)",
    "B2_run32": "commit 1a28ce7: same call, B2 with the default (no prompt reaches 2048 tokens) and each program run "
                "once at start-up: 8,806 tok/s, host 8.5 ms per step",
    "B2_run28": "commit 35e8463 (session 8, call 4): bf16, Triton prefill (the default); the same call's "
                "JAXLLM_ATTENTION_IMPL=pallas_mosaic run failed (the Mosaic custom call refused an unaligned metadata "
                "slice; fixed in 98588bc)",
    "B2_run16": "commit bf3019a: W8A8 (K-minor fp8 weights, per-token fp8 activations) + fp8 KV cache under "
                "XLA_FLAGS=--xla_gpu_autotune_level=2 (what the engine now sets for W8A8 programs itself): 1.27x "
                "bf16 (B2_run13); start-up 50 s. Roofline recomputed with the linear FLOPs at the fp8 GEMM rate "
                "(the JSON's own, at the bf16 rate: 16,583, 69.5%)",
    "B2_run17": "commit 66d76c0: W8A8 alone (bf16 KV cache), the engine's own level-2 compile (no XLA_FLAGS): "
                "1.26x bf16 (B2_run13); start-up 31 s",
    "B2_run18": "commit cb5702b: bf16 baseline of this device call (one-GPU machine A)",
    "B2_run19": "commit cb5702b, machine A: W8A8 alone with the fp8 GEMMs writing bf16 (was float32): 1.33x bf16 "
                "(B2_run18), was 1.26x (B2_run17)",
    "B2_run20": "commit cb5702b, machine A: W8A8 + fp8 KV, bf16 GEMM outputs, fp8 attention as before (tiles "
                "converted to bf16): 1.31x",
    "B2_run21": "commit cb5702b, machine A: same with JAXLLM_PA_FP8_DOT=f16 (not in the command field: float16 "
                "tiles in both attention launches, bf16's tile shapes): 1.36x",
    "B2_run22": "commit 8b7ce3e, machine B: W8A8 + fp8 KV with the fp8 decode tile (128 keys, float16 tiles): "
                "1.42x bf16 of the same call (B2_run23)",
    "B2_run23": "commit 8b7ce3e: bf16 baseline, machine B (4% below machine A's B2_run18)",
    "B2_run24": "commit 8b7ce3e, machine B, warm compile cache: bf16 again",
    "B2_run25": "commit 8b7ce3e, machine B, warm compile cache: W8A8 + fp8 KV again, 1.40x B2_run24",
    "B2_run26": "commit 8b7ce3e, machine B, warm compile cache: W8A8 + fp8 KV first, then bf16 (B2_run27): 1.42x",
    "B2_run27": "commit 8b7ce3e, machine B, warm compile cache: bf16 after W8A8 + fp8 KV",
}


# Runs that produced no JSON (killed by their time limit before printing anything), with their commands.
UNFINISHED = [
    ("commit ca3d99a, H200: `jaxllm bench --workload B2 --quantization fp8 --fp8-activations dynamic "
    "--kv-cache-dtype fp8 --gpu-busy` (BENCH_TIMEOUT=170 in scripts/gpu_bench_matrix.sh): killed at 170 s "
    "before start-up ended; the log holds only XLA autotuner timer warnings"),
    ("commit d49fb70, H200: the same command and `jaxllm bench --workload B2 --quantization fp8 --fp8-activations "
    "dynamic --gpu-busy` (BENCH_TIMEOUT=140): both killed at 140 s before start-up ended, empty logs"),
    ("commit e2edd02, H200 (scripts/gpu_followup.sh): the same W8A8 + fp8 KV command with a 270 s limit: killed "
    "after 3 of its 11 forward programs had compiled (the 512-token one at 200 s). Cause, found with "
    "scripts/fp8_compile_probe.py (fp8_startup_h200.md): XLA's default autotuning (level 4) checks each fp8 "
    "GEMM candidate's result, 2-25 s per fp8 GEMM shape; level 2 takes ~1 s. Fixed in 2dcb1b5 (W8A8 programs "
    "compile at level 2); measured as B2_run16 (level 2 through XLA_FLAGS)"),
    ("commit 6b282b6, H200 (GPU 0 of a 2-GPU machine; scripts/gpu_quant_profile.sh): a 300-request B2 subset in "
    "W8A8 + fp8 KV under --xla_gpu_autotune_level=0 with a trace: compiled in 25 s, then did not finish "
    "generating within 110 s (untuned GEMMs)"),
]


def _flag(command: str, name: str, default: str) -> str:
    parts = command.split()
    return parts[parts.index(name) + 1] if name in parts else default


def _num_gpus(r: dict) -> int:
    return int(_flag(r.get("command", ""), "--tensor-parallel-size", "1"))


def _w8a8_roofline_tok_s(r: dict) -> float:
    """Output tok/s roofline of an fp8 W8A8 run stored before the roofline ran linear FLOPs at the fp8 GEMM rate
    (commit a9b0614): recomputed from the run's workload and flags with today's ``roofline``."""
    from jaxllm.bench.roofline import run_roofline
    from jaxllm.bench.workloads import CONFIG_DIR, Workload
    from jaxllm.config import ModelConfig

    cmd = r["command"]
    w = Workload(**{**r["workload"], "config": os.path.join(CONFIG_DIR, os.path.basename(r["workload"]["config"]))})
    cfg = ModelConfig.from_hf(w.hf_config(), dtype="bfloat16")
    prompts, outs = w.requests(cfg.vocab_size)
    roof = run_roofline(cfg, [len(p) for p in prompts], outs, max_num_seqs=int(_flag(cmd, "--max-num-seqs", "256")),
                        quantization="fp8", kv_cache_dtype=_flag(cmd, "--kv-cache-dtype", "auto"),
                        tensor_parallel_size=_num_gpus(r), fp8_activations="dynamic")
    return roof["output_tok_s"]


def _roofline_tok_s(r: dict) -> float:
    """The run's roofline over all its GPUs (runs before d49fb70 stored the one-GPU bound; it scales by N; W8A8
    runs stored before the fp8 FLOP rate are recomputed)."""
    roof = r["roofline"]
    w8a8 = r["jaxllm"].get("quantization") == "fp8" and r["jaxllm"].get("fp8_activations") == "dynamic"
    if w8a8 and "linear_peak_flops" not in roof:
        return _w8a8_roofline_tok_s(r)
    return roof["output_tok_s"] * (1 if "num_gpus" in roof else _num_gpus(r))


def _busy_pct(r: dict) -> float | None:
    """Mean busy % of the GPUs the run used: its N busiest (a one-GPU run on the 4-GPU machine sees 4 GPUs)."""
    busy = r["jaxllm"].get("gpu_busy") or {}
    per_gpu = sorted(busy.get("per_gpu_mean_pct") or [], reverse=True)[:_num_gpus(r)]
    return sum(per_gpu) / len(per_gpu) if per_gpu else busy.get("mean_pct")


def _peer_rows(runs: dict) -> list[str]:
    rows = [("HF transformers peer measured in the same invocation (`--peer hf`: transformers' `generate_batch`, "
            "default continuous batching, on the same prompts; ../shared/BENCHMARKS.md quotes 820 and 580 on "
            "this GPU):"), "", "| run | workload | jaxllm output tok/s | HF output tok/s (requests) | ratio |",
            "|---|---|---|---|---|"]
    for name, r in runs.items():
        if "peer_hf" in r:
            peer = r["peer_hf"]
            rows.append(f"| {name} | {r['workload']['name']} | {r['jaxllm']['output_tok_s']:,.0f} | "
                        f"{peer['output_tok_s']:,.0f} ({peer.get('num_requests', '?')}) | "
                        f"{r['speedup_vs_peer_output']:.1f}x |")
    return rows if len(rows) > 4 else []


def _tp_table(runs: dict) -> list[str]:
    """B2 at TP = 1, 2, 4 (fastest bf16 run of each: one-GPU machines differed by up to 5% between calls, and
    the fastest TP=1 run keeps the speed-ups conservative) with per-GPU efficiency vs TP=1."""
    best = {}
    for name, r in runs.items():
        cmd = r.get("command", "")
        if r["workload"]["name"] != "B2" or any(f in cmd for f in ("--quantization", "--kv-cache-dtype", "--num-requests",
                                                                   "--max-num-seqs", "--no-async")):
            continue
        if "--gpu-busy" not in cmd:
            continue
        tp = _num_gpus(r)
        if tp not in best or r["jaxllm"]["output_tok_s"] > best[tp][1]["output_tok_s"]:
            best[tp] = (name, r["jaxllm"])
    if 1 not in best:
        return []
    base = best[1][1]["output_tok_s"]
    rows = [("B2 with tensor parallelism (same workload; TP=1 on the one-GPU machine, TP=2/4 on the 4-GPU one; the "
            "fastest bf16 run of each):"), "",
            "| TP | run | output tok/s | speed-up | per-GPU efficiency | start-up s |", "|---|---|---|---|---|---|"]
    for tp, (name, o) in sorted(best.items()):
        rows.append(f"| {tp} | {name} | {o['output_tok_s']:,.0f} | {o['output_tok_s'] / base:.2f}x | "
                    f"{100 * o['output_tok_s'] / base / tp:.0f}% | {o['startup_s']:.0f} |")
    return rows


def main() -> None:
    runs = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "throughput_h200_*_run*.json"))):
        name = os.path.basename(path)[len("throughput_h200_"):-len(".json")]
        with open(path) as f:
            runs[name] = json.load(f)
    rows = [("| run | workload | TP | output tok/s | total tok/s | % roofline (output) | generate s | start-up s "
            "(compile s) | ms/step (host ms/step) | GPU busy % | peak GiB | note |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda item: (item[0].split("_")[0], int(item[0].rsplit("run", 1)[1]))
    runs = dict(sorted(runs.items(), key=key))
    for name, r in runs.items():
        o = r["jaxllm"]
        tp = _num_gpus(r)
        busy = _busy_pct(r)
        roof = _roofline_tok_s(r)
        rows.append(f"| {name} | {r['workload']['name']} | {tp} | {o['output_tok_s']:,.0f} | {o['total_tok_s']:,.0f} | "
                    f"{100 * o['output_tok_s'] / roof:.1f}% of {roof:,.0f} | "
                    f"{o['generate_s']:.1f} | {o['startup_s']:.0f} ({o['compile_s']:.0f}) | "
                    f"{o['ms_per_step']:.1f} ({o['host_ms_per_step']:.1f}) | "
                    f"{'-' if busy is None else f'{busy:.0f}'} | {o['peak_device_bytes'] / 2**30:.0f} | "
                    f"{RUN_NOTES.get(name, '')} |")
    md = ["# Throughput on H200s (random bf16 weights, random prompts, ignore_eos)", "",
          ("Command (per run, on the GPU machine): `python3 -m jaxllm.bench --workload B1|B2 ...` with the flags in "
          "each JSON's `command` (runs 1-2 through `scripts/gpu_throughput.sh`, later ones through "
          "`scripts/gpu_bench_matrix.sh`). Defaults: max_num_seqs 256, max_num_batched_tokens 8192, block 16, "
          "gpu_memory_utilization 0.9, asynchronous scheduling on (from run B1_run3 / B2_run2). Roofline: "
          "../shared/BENCHMARKS.md's method, computed by the script; with tensor parallelism over N GPUs the "
          "bound of N ideal GPUs (N x the FLOP/s and bandwidth, free communication); quantized runs count their "
          "weight and KV bytes, and fp8 W8A8 runs their linear FLOPs at the fp8 GEMM rate (roofline.FP8_PEAK_FLOPS: "
          "783 TFLOP/s x the 1.69x fp8/bf16 speed-up measured on one GEMM), recomputed here for W8A8 runs stored before that. GPU busy: "
          "nvidia-smi's "
          "utilization.gpu sampled every 100 ms during generate (`--gpu-busy`), mean over the GPUs the run used. "
          "Host ms/step: wall time not spent waiting for sampled ids."),
          "", *rows, "", *_tp_table(runs), "", *_peer_rows(runs), "",
          "Runs that did not finish (fp8 W8A8 end to end):", "",
          *[f"- {u}" for u in UNFINISHED]]
    with open(os.path.join(ROOT, "benchmarks", "throughput_h200.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(ROOT, "benchmarks", "throughput_h200.json"), "w") as f:
        json.dump({"runs": runs, "peer_output_tok_s_from_BENCHMARKS_md": PEER_OUTPUT_TOK_S, "notes": RUN_NOTES},
                  f, indent=2)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
