"""Embedding throughput: ``jaxllm bench --workload E-bert`` / ``E-qwen3`` (10,000 random-id texts of 128-512
tokens; BERT-base dims and Qwen3-0.6B dims = Qwen3-Embedding-0.6B), docs/s and % of the compute roofline.

Weights are random (load_format="dummy", bf16). The roofline is compute-bound: 2 x linear params x tokens plus
attention (4 x T^2 x heads x head dim per layer; half of it for a causal decoder), at the measured bf16 matmul
peak (``roofline.PEAK_FLOPS``). Padding and the pooling heads are not counted, so they show as lost roofline.
``--gpu-busy`` samples nvidia-smi's busy % during the embed call (a host-bound run shows gaps), ``--host-profile``
writes its cProfile. ``--peer hf`` runs transformers (AutoModel, bf16, SDPA, length-sorted padded batches of as
many padded tokens as our batches: ``max_num_batched_tokens``, 32768 unless given) on the same documents first,
in a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

from jaxllm.bench.monitor import GpuBusySampler, host_profile
from jaxllm.bench.peer_process import run_peer_process
from jaxllm.bench.roofline import PEAK_FLOPS
from jaxllm.bench.workloads import CONFIG_DIR, Workload
from jaxllm.engine_args import POOLING_MAX_NUM_BATCHED_TOKENS

EMBED_WORKLOADS = {
    "E-bert": Workload("E-bert", os.path.join(CONFIG_DIR, "bert-base.json"), 10_000, (128, 512), (0, 0)),
    "E-qwen3": Workload("E-qwen3", os.path.join(CONFIG_DIR, "qwen3-0.6b.json"), 10_000, (128, 512), (0, 0)),
}


def doc_flops(hf: dict, num_tokens: int) -> float:
    """Matmul FLOPs of one document's forward (no lm_head: pooling models have none)."""
    d, layers, heads = hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"]
    dh = hf.get("head_dim") or d // heads
    f = hf["intermediate_size"]
    encoder = hf["architectures"][0] in ("BertModel", "XLMRobertaModel", "RobertaModel")
    if encoder:
        linear = layers * (4 * d * d + 2 * d * f)
    else:
        kv = hf.get("num_key_value_heads") or heads
        linear = layers * (d * (heads + 2 * kv) * dh + heads * dh * d + 3 * d * f)
    attention = layers * 4 * num_tokens * num_tokens * heads * dh * (1.0 if encoder else 0.5)
    return 2 * linear * num_tokens + attention


def run_jaxllm(w: Workload, args, model_dir: str, prompts: list[list[int]]) -> dict:
    import jax

    from jaxllm import LLM

    t0 = time.perf_counter()
    llm = LLM(model_dir, runner="pooling", load_format="dummy", skip_tokenizer_init=True, dtype=args.dtype,
              max_model_len=w.prompt_len[1], max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
              enforce_eager=args.enforce_eager, seed=args.seed)
    startup = time.perf_counter() - t0
    items = [{"prompt_token_ids": p} for p in prompts]
    if args.profile_dir:
        jax.profiler.start_trace(args.profile_dir)
    sampler = GpuBusySampler() if args.gpu_busy else None
    if sampler:
        sampler.start()
    t1 = time.perf_counter()
    with host_profile(args.host_profile):
        outs = llm.embed(items, use_tqdm=False)
    wall = time.perf_counter() - t1
    gpu_busy = sampler.stop() if sampler else None
    if args.profile_dir:
        jax.profiler.stop_trace()
    runner = llm._encoder if llm.llm_engine is None else llm.llm_engine.runner
    padding = {}
    if llm.llm_engine is None:  # the dense path's batch plan: padded tokens (rows x length) over real ones
        from jaxllm.pooling.batching import plan_stats

        lengths, a = [len(p) for p in prompts], runner.args
        stats = plan_stats(lengths, runner.plan(lengths), a.max_num_batched_tokens, a.max_num_seqs,
                           runner.config.num_heads)
        padding = {"batches": stats["batches"], "padded_over_real": stats["padded_over_real"]}
    return {**padding, "startup_s": startup, "compile_s": runner.compile_seconds, "embed_s": wall,
            "docs_s": len(prompts) / wall, "tokens_s": sum(map(len, prompts)) / wall,
            "max_num_batched_tokens": llm.engine_args.max_num_batched_tokens,
            "embedding_dim": len(outs[0].outputs.embedding), "path": "dense encoder" if llm.llm_engine is None
            else "paged engine", "gpu_busy": gpu_busy, "device": str(jax.devices()[0].device_kind),
            "jax": jax.__version__}


def run_peer(w: Workload, args, model_dir: str) -> dict:
    """transformers' AutoModel on the same documents (peer_hf_embed.py), in a subprocess; returns its JSON."""
    budget = args.max_num_batched_tokens or POOLING_MAX_NUM_BATCHED_TOKENS
    return run_peer_process("jaxllm.bench.peer_hf_embed", w, args, model_dir, "--max-batch-tokens", str(budget))


def main(args, w: Workload, argv) -> dict:
    hf = w.hf_config()
    prompts, _ = w.requests(hf["vocab_size"])
    with tempfile.TemporaryDirectory() as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(hf, f)
        peer = run_peer(w, args, model_dir) if args.peer else None
        ours = run_jaxllm(w, args, model_dir, prompts)
    flops = sum(doc_flops(hf, len(p)) for p in prompts)
    roof_docs_s = len(prompts) / (flops / PEAK_FLOPS)
    result = {"workload": dataclasses.asdict(w), "command": "jaxllm bench " + " ".join(argv or sys.argv[1:]),
              "jaxllm": ours, "roofline": {"peak_flops": PEAK_FLOPS, "flops": flops, "docs_s": roof_docs_s},
              "pct_roofline": 100 * ours["docs_s"] / roof_docs_s}
    if peer:
        result["peer_hf"] = peer
        result["speedup_vs_peer"] = ours["docs_s"] / peer["docs_s"]
    rows = [("workload", w.name), ("path", ours["path"]), ("start-up s (compile)",
            f"{ours['startup_s']:.1f} ({ours['compile_s']:.1f})"), ("embed s", f"{ours['embed_s']:.2f}"),
            ("docs/s", f"{ours['docs_s']:,.1f}"), ("tokens/s", f"{ours['tokens_s']:,.0f}"),
            ("roofline docs/s", f"{roof_docs_s:,.1f}"), ("% of compute roofline", f"{result['pct_roofline']:.1f}%")]
    if ours.get("gpu_busy"):
        rows.append(("GPU busy % (nvidia-smi)", f"{ours['gpu_busy']['mean_pct']:.1f}"))
    if "padded_over_real" in ours:
        rows.append(("batches (padded / real tokens)", f"{ours['batches']} ({ours['padded_over_real']:.3f})"))
    if peer:
        rows.append(("HF peer docs/s (ratio)", f"{peer['docs_s']:,.1f} ({result['speedup_vs_peer']:.2f}x)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result
