"""What the E-bert embedding benchmark's batching does: the batch plan of its documents and, with ``--run``, where
one ``LLM.embed`` call spends its wall time; ``--workload E-qwen3`` does the same for the paged engine's steps.

    python scripts/embed_batches.py                    # the plan only (no jax work): padding and programs
    python scripts/embed_batches.py --run --tiny 2000  # CPU: a tiny BERT on the first 2,000 documents
    python scripts/embed_batches.py --run              # GPU: BERT-base dims, all 10,000 documents
    python scripts/embed_batches.py --run --workload E-qwen3   # GPU: the decoder's steps (Qwen3-0.6B dims)

The plan table gives, per padded length L, the batches, their rows (``max_num_batched_tokens // L``), the
documents and the padded tokens over the real ones, then the totals for 2, 4 and 8 length buckets per octave.
``--run`` times the phases of ``embed``: the host work before the first launch (prompt checks), the host side of
each launch (padding, device_put, the asynchronous program call), the wait for each batch's pooled rows and the
host work after it (pooling heads, outputs), the most batches queued on the device at once, then each length's
program alone on a full batch (ms, TFLOP/s of its padded tokens, % of the bf16 peak) and the plan's device time
alone against the wall time: what the kernels lose versus what padding, the host and the pipeline lose. For
E-qwen3: the steps, wall ms per step, the host's time blocked on the device per step, and the largest bucket's
forward alone on an all-padding step (its GEMMs and element-wise work at the step's token count, no attention
and no KV write: the rest of a step's time is those, the pipeline and the host).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

from jaxllm.bench.embed import EMBED_WORKLOADS
from jaxllm.pooling.batching import batch_rows, length_buckets, plan_batches, plan_stats

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
TINY_DECODER = {**TINY, "num_key_value_heads": 1, "head_dim": 16}


def print_plan(lengths: list[int], max_len: int, tokens: int, seqs: int, heads: int) -> None:
    buckets = length_buckets(max_len)
    plan = plan_batches(lengths, buckets, tokens, seqs, heads)
    print(f"{len(lengths)} documents, {sum(lengths):,} tokens; max_num_batched_tokens={tokens}, max_num_seqs={seqs}")
    print(f"{'L':>5} {'rows':>5} {'batches':>8} {'docs':>6} {'padded/real':>12}")
    for length in buckets:
        mine = [b for b, n in plan if n == length]
        if mine:
            real = sum(lengths[j] for b in mine for j in b)
            rows = batch_rows(length, tokens, seqs, heads)
            padded = len(mine) * rows * length
            print(f"{length:>5} {rows:>5} {len(mine):>8} {sum(map(len, mine)):>6} "
                  f"{padded / real:>12.3f}")
    print(f"{'per octave':>10} {'programs':>9} {'batches':>8} {'padded tokens':>14} {'padded/real':>12}")
    for per_octave in (2, 4, 8):
        ladder = length_buckets(max_len, per_octave)
        s = plan_stats(lengths, plan_batches(lengths, ladder, tokens, seqs, heads), tokens, seqs, heads)
        print(f"{per_octave:>10} {len(ladder):>9} {s['batches']:>8} {s['padded_tokens']:>14,} "
              f"{s['padded_over_real']:>12.3f}")


def bench_llm(hf: dict, args):
    """The benchmark's pooling LLM over random weights of the dims ``hf`` (bf16; enforce_eager with ``--tiny``)."""
    from jaxllm import LLM

    with tempfile.TemporaryDirectory() as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(hf, f)
        return LLM(model_dir, runner="pooling", load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16",
                   max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                   max_num_batched_tokens=args.max_num_batched_tokens, enforce_eager=args.tiny)


def timed_run(prompts: list[list[int]], hf: dict, args) -> None:
    """Run ``LLM.embed`` as the benchmark does, with the runner's launch / collect wrapped in timers."""
    import jax

    llm = bench_llm(hf, args)
    runner = llm._encoder
    items = [{"prompt_token_ids": p} for p in prompts]
    llm.embed(items[:64], use_tqdm=False)  # compiles what enforce_eager left out
    t = {"launch": 0.0, "wait": 0.0, "host_after": 0.0, "first_launch": None, "queued": 0, "max_queued": 0}
    launch, collect = runner._launch, runner._collect

    def timed_launch(*a):
        t0 = time.perf_counter()
        t["first_launch"] = t["first_launch"] or t0
        out = launch(*a)
        t["launch"] += time.perf_counter() - t0
        t["queued"] += 1
        t["max_queued"] = max(t["max_queued"], t["queued"])
        return out

    def timed_collect(batch, lens, pooled, hidden, *rest):
        t0 = time.perf_counter()
        jax.block_until_ready((pooled, hidden))
        t1 = time.perf_counter()
        collect(batch, lens, pooled, hidden, *rest)
        t["wait"] += t1 - t0
        t["last_collect"] = time.perf_counter()
        t["host_after"] += t["last_collect"] - t1
        t["queued"] -= 1

    runner._launch, runner._collect = timed_launch, timed_collect
    t_start = time.perf_counter()
    llm.embed(items, use_tqdm=False)
    t_end = time.perf_counter()
    wall = t_end - t_start
    plan = runner.plan([len(p) for p in prompts])
    n = len(plan)
    rows = [("device", jax.devices()[0].device_kind), ("wall s (docs/s)", f"{wall:.3f} ({len(prompts) / wall:,.0f})"),
            ("host before first launch s", f"{t['first_launch'] - t_start:.3f}"), ("batches", n),
            ("launch host ms/batch", f"{1e3 * t['launch'] / n:.3f}"), ("wait ms/batch", f"{1e3 * t['wait'] / n:.3f}"),
            ("host after wait ms/batch", f"{1e3 * t['host_after'] / n:.3f}"),
            ("host after last batch s", f"{t_end - t['last_collect']:.3f}"),
            ("most batches queued", t["max_queued"]), ("compiled programs", len(runner._compiled))]
    for k, v in rows:
        print(f"{k:<28} {v}")
    device_times(runner, hf, plan, wall)


def device_times(runner, hf: dict, plan: list, wall: float, repeats: int = 5) -> None:
    """Each length's program alone, back to back on a full batch: ms per batch and the FLOP rate of its padded
    tokens (``doc_flops``) against ``PEAK_FLOPS``; then the plan's device time alone against the wall time."""
    import jax
    import numpy as np

    from jaxllm.bench.embed import doc_flops
    from jaxllm.bench.roofline import PEAK_FLOPS

    print(f"{'L':>5} {'rows':>5} {'ms/batch':>9} {'TFLOP/s':>8} {'% peak':>7}")
    total = 0.0
    for length, count in sorted(collections.Counter(n for _, n in plan).items()):
        rows = runner.batch_rows(length)
        ids = jax.device_put(np.ones((rows, length), np.int32), runner._replicated)
        lens = jax.device_put(np.full(rows, length, np.int32), runner._replicated)
        program = runner._program(length, False)
        jax.block_until_ready(program(runner.state, ids, ids * 0, lens))
        t0 = time.perf_counter()
        for _ in range(repeats):
            out = program(runner.state, ids, ids * 0, lens)
        jax.block_until_ready(out)
        ms = 1e3 * (time.perf_counter() - t0) / repeats
        rate = rows * doc_flops(hf, length) / ms / 1e9
        total += count * ms / 1e3
        print(f"{length:>5} {rows:>5} {ms:>9.3f} {rate:>8.1f} {100 * rate * 1e12 / PEAK_FLOPS:>6.1f}%")
    print(f"device time of the plan alone: {total:.3f} s ({100 * total / wall:.0f}% of the wall time)")


def timed_engine_run(prompts: list[list[int]], hf: dict, args, repeats: int = 5) -> None:
    """E-qwen3 on the paged engine as the benchmark runs it: wall time per step, the host's wait for the device,
    then the largest bucket's forward alone (all padding) against the bf16 peak."""
    import jax

    from jaxllm.bench.roofline import PEAK_FLOPS
    from jaxllm.runner.programs import ForwardKey

    llm = bench_llm(hf, args)
    runner = llm.llm_engine.runner
    items = [{"prompt_token_ids": p} for p in prompts]
    llm.embed(items[:64], use_tqdm=False)
    steps0, wait0, t0 = runner.num_steps, runner.device_wait_seconds, time.perf_counter()
    llm.embed(items, use_tqdm=False)
    wall = time.perf_counter() - t0
    steps, wait = runner.num_steps - steps0, runner.device_wait_seconds - wait0
    bucket = runner.ladder.buckets[-1]
    program = runner.programs.get(ForwardKey(bucket))
    inputs = runner._padding_step(bucket)
    with runner.device_lock:
        for i in range(repeats + 1):  # the first one unmeasured
            if i == 1:
                jax.block_until_ready(runner.kv_caches)
                t1 = time.perf_counter()
            runner.kv_caches, pooled, _ = program(runner.params, runner.kv_caches, inputs)
        jax.block_until_ready(pooled)
    ms = 1e3 * (time.perf_counter() - t1) / repeats
    d, f, layers = hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"]
    heads, kv, dh = hf["num_attention_heads"], hf["num_key_value_heads"], hf["head_dim"]
    linear = 2 * bucket.num_tokens * layers * (d * (heads + 2 * kv) * dh + heads * dh * d + 3 * d * f)
    rows = [("device", jax.devices()[0].device_kind), ("wall s (docs/s)", f"{wall:.3f} ({len(prompts) / wall:,.0f})"),
            ("steps", steps), ("wall ms/step", f"{1e3 * wall / steps:.2f}"),
            ("host blocked on device ms/step", f"{1e3 * wait / steps:.2f}"),
            (f"forward alone ms ({bucket.num_tokens} padding tokens)", f"{ms:.2f}"),
            ("its linear TFLOP/s (% peak)", f"{linear / ms / 1e9:.1f} ({100 * linear / ms * 1e3 / PEAK_FLOPS:.1f}%)")]
    for k, v in rows:
        print(f"{k:<44} {v}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("num_docs", type=int, nargs="?", default=None, help="the first N documents (default: all)")
    p.add_argument("--workload", default="E-bert", choices=["E-bert", "E-qwen3"])
    p.add_argument("--max-num-batched-tokens", type=int, default=32768)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--run", action="store_true", help="also run LLM.embed and time its phases")
    p.add_argument("--tiny", action="store_true", help="with --run: a 1-layer, 32-wide model (CPU)")
    args = p.parse_args(argv)
    w = EMBED_WORKLOADS[args.workload]
    hf = w.hf_config()
    prompts = w.requests(hf["vocab_size"])[0][:args.num_docs]
    args.max_model_len = w.prompt_len[1]
    if args.workload == "E-qwen3":
        if args.run:
            timed_engine_run(prompts, {**hf, **TINY_DECODER} if args.tiny else hf, args)
        return
    print_plan([len(x) for x in prompts], w.prompt_len[1], args.max_num_batched_tokens, args.max_num_seqs,
               hf["num_attention_heads"])
    if args.run:
        timed_run(prompts, {**hf, **TINY} if args.tiny else hf, args)


if __name__ == "__main__":
    sys.exit(main())
