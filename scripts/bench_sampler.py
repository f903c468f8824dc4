"""Micro-benchmark of the sampler alone: the jitted ``jaxllm.models.sampler.sample`` on [S, V] f32 logits for
plain temperature sampling and each truncation setting (top_p, top_k, min_p, combinations, per-row mixes), on
flat logits (N(0, 1): a nucleus of thousands of tokens, what random weights give) and peaked ones (a few tokens
far above the rest, as a trained model). Prints a table: us per call, the cost over plain sampling on the same
logits, the number of ``conditional`` ops in the compiled program (each one is a device->host sync per step on
GPU), and the same for a baseline sampler module when given (e.g. main's sampler, to compare old and new).

  python scripts/bench_sampler.py                                   # GPU: S=256, V=151936 (Qwen3's vocabulary)
  git show main:jaxllm/models/sampler.py > /tmp/sampler_main.py && \\
    python scripts/bench_sampler.py --baseline-module /tmp/sampler_main.py
  python scripts/bench_sampler.py --batch 8 --vocab 4096 --reps 2 --rounds 2   # CPU smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jaxllm.ops.sampling import exact_rows, row_keys, truncated_gumbel_argmax

from jaxllm.engine.batch import ScheduledSeq
from jaxllm.models import sampler
from jaxllm.models import sampler_filters as sf
from jaxllm.models import sampler_membership as sm
from jaxllm.runner.sampler_config import start_up_cover
from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.sampling_params import SamplingParams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import timeit

VARIANTS = {  # name -> SamplingParams fields (a list: cycled over the rows)
    "plain": [{}],
    "top_p=0.95": [{"top_p": 0.95}],
    "top_k=50": [{"top_k": 50}],
    "min_p=0.05": [{"min_p": 0.05}],
    "top_k=20+top_p=0.95": [{"top_k": 20, "top_p": 0.95}],
    "top_p=0.9+min_p=0.05": [{"top_p": 0.9, "min_p": 0.05}],
    "top_p=0.95+min_p=0.05": [{"top_p": 0.95, "min_p": 0.05}],  # B1's b1-topp-minp preset
    "top_p=0.5": [{"top_p": 0.5}],
    "top_k=1000": [{"top_k": 1000}],
    "top_k=100+top_p=0.9": [{"top_k": 100, "top_p": 0.9}],
    "mixed rows": [{}, {"top_p": 0.95}, {"top_k": 50}, {"min_p": 0.1}, {"top_k": 20, "top_p": 0.8}],
    # logprobs widths (logprobs_width): the start-up top-20, a max_logprobs of 100, the whole vocabulary
    "logprobs=20": [{"logprobs": 20}],
    "logprobs=100": [{"logprobs": 100}],
    "logprobs=-1": [{"logprobs": -1}],
}


def logits_sets(dist: str, s: int, v: int, n: int = 2) -> list[jax.Array]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):  # several buffers, so one does not sit in L2
        x = rng.standard_normal((s, v), dtype=np.float32)
        if dist == "peaked":
            x[:, rng.integers(0, v, 8)] += 12.0
        out.append(jnp.asarray(x))
    return out


def metadata(fields: list[dict], temperature: float, s: int, v: int):
    seqs = []
    for i in range(s):
        sp = SamplingParams(temperature=temperature, seed=i, **fields[i % len(fields)])
        seqs.append(ScheduledSeq(seq_id=i, token_ids=[1], start=0, num_new_tokens=1, block_table=[0],
                                 num_prompt_tokens=1, sampling_params=sp, sample=True, output_index=5,
                                 rng_seed=i))
    md, cfg = build_sampling_metadata(seqs, s, v)
    return jax.device_put(md), start_up_cover(cfg)  # the variant the runner runs (the same array shapes)


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("sampler_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def measure(module, xs, md, cfg, reps, rounds) -> tuple[float, int]:
    fn = jax.jit(lambda x, md: module.sample(x, md, cfg).token_ids)
    n_cond = fn.lower(xs[0], md).compile().as_text().count(" conditional(")
    sec, _ = timeit(fn, [(x, md) for x in xs], reps=reps, rounds=rounds)
    return sec * 1e6, n_cond


def parts(xs, temperature: float, reps: int, rounds: int) -> list[dict]:
    """The top-k / top-p fast path's steps alone (jaxllm/models/sampler_filters.py) on the same logits, so a
    slow setting shows which step to work on: plain Gumbel-max, top-64 values, the draw from them (top_k < 64),
    race, membership, and the exact-rows kernel drawing every row (the cost of undecided rows)."""
    s = xs[0].shape[0]
    t, floor = jnp.full(s, temperature), jnp.full(s, -jnp.inf)
    keys, noisy = row_keys(jnp.zeros((s, 2), jnp.uint32), jnp.arange(s)), jnp.ones(s, bool)
    k, p = jnp.full(s, 50, jnp.int32), jnp.full(s, 0.95)
    cand = jnp.asarray(np.asarray(xs[0][:, :sm.MEMBERSHIP_TESTS]))
    off, zeros = jnp.full(s, xs[0].shape[1], jnp.int32), jnp.zeros(s, jnp.int32)
    steps = {
        "gumbel-max (plain)": lambda x: truncated_gumbel_argmax(x, floor, t, keys, noisy),
        f"top-{sf.TOPK_CANDIDATES} values": lambda x: sf.top_k_values(x, sf.TOPK_CANDIDATES)[0],
        "top-values draw (all)": lambda x: sf.top_values_draw(x, floor, t, k, p, keys, noisy)[0],
        "race": lambda x: sf.race(x, floor, t, keys, noisy)[0],
        "membership (one pass)": lambda x: sm.survives(x, cand, floor, jnp.max(x, axis=-1), t, k, p, True),
        "membership (per draw)": lambda x: sm.survives(x, cand, floor, jnp.max(x, axis=-1), t, k, p, False),
        "fast path (all steps)": lambda x: sf.fast_path(x, floor, t, k, p, keys, noisy)[0],
        # what an undecided row costs: every row drawn by the exact-rows kernel, top-p alone and with top-k
        "exact rows all (top_p)": lambda x: exact_rows(x, noisy, floor, off, p, t, keys, zeros),
        "exact rows all (top_k+p)": lambda x: exact_rows(x, noisy, floor, k, p, t, keys, zeros),
    }
    out = []
    for name, fn in steps.items():
        sec, _ = timeit(jax.jit(fn), [(x,) for x in xs], reps=reps, rounds=rounds)
        out.append({"step": name, "us": sec * 1e6})
        print(f"  {name:28} {sec * 1e6:9.1f} us", flush=True)
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--dists", default="flat,peaked")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--baseline-module", default=None, help="path of another sampler.py to time beside")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--no-parts", action="store_true", help="skip the per-step timings of the fast path")
    args = ap.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    base = load_module(args.baseline_module) if args.baseline_module else None
    print(f"device: {jax.devices()[0].device_kind}  S={args.batch} V={args.vocab} T={args.temperature}")
    head = f"{'dist':7} {'variant':22} {'us':>9} {'vs plain':>9} {'conds':>5}"
    print(head + (f" {'base us':>9} {'vs plain':>9} {'conds':>5}" if base else ""))
    rows = []
    for dist in args.dists.split(","):
        xs = logits_sets(dist, args.batch, args.vocab)
        plain = {}
        for name in ["plain"] + [n for n in names if n != "plain"]:
            md, cfg = metadata(VARIANTS[name], args.temperature, args.batch, args.vocab)
            row = {"dist": dist, "variant": name}
            row["us"], row["conds"] = measure(sampler, xs, md, cfg, args.reps, args.rounds)
            if base:
                row["base_us"], row["base_conds"] = measure(base, xs, md, cfg, args.reps, args.rounds)
            plain = plain or dict(row)
            line = f"{dist:7} {name:22} {row['us']:9.1f} {row['us'] / plain['us'] - 1:+9.1%} {row['conds']:5d}"
            if base:
                line += (f" {row['base_us']:9.1f} {row['base_us'] / plain['base_us'] - 1:+9.1%}"
                         f" {row['base_conds']:5d}")
            print(line, flush=True)
            rows.append(row)
    steps = []
    if not args.no_parts:
        print(f"fast-path steps, flat logits, top_k=50 + top_p=0.95 (S={args.batch}, V={args.vocab}):")
        steps = parts(logits_sets("flat", args.batch, args.vocab), args.temperature, args.reps, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "batch": args.batch, "vocab": args.vocab,
                       "temperature": args.temperature, "rows": rows, "steps": steps}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
