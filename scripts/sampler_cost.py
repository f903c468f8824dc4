"""XLA's static cost of the sampler programs, per sampling setting, without running them: bytes accessed, flops
and transcendentals from ``cost_analysis()`` of the compiled program, and the number of full [S, V] passes (the
top-level ops of the optimized HLO that read or write an array of S * V elements or more).

Compiled for this machine's backend. On a CPU the GPU's code paths are selected (``as_gpu_paths``): the sums of the
membership test in one variadic reduction and the exact-rows kernel as a no-op (a Pallas kernel on the GPU costs
nothing for rows it does not draw), so the figures count what the GPU's fast path does per step.

  python scripts/sampler_cost.py                       # S=256, V=151936 (B1's batch, Qwen3's vocabulary)
  python scripts/sampler_cost.py --batch 8 --vocab 4096
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jaxllm.ops.sampling import reference

from jaxllm.engine.batch import ScheduledSeq
from jaxllm.models import sampler, sampler_filters
from jaxllm.runner.sampler_config import start_up_cover
from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.sampling_params import SamplingParams

SETTINGS = {  # name -> SamplingParams fields of every row
    "plain": {},
    "min_p=0.05": {"min_p": 0.05},
    "top_k=50": {"top_k": 50},
    "top_p=0.95": {"top_p": 0.95},
    "top_k=20+top_p=0.95+min_p=0.05": {"top_k": 20, "top_p": 0.95, "min_p": 0.05},
    "top_k=100+top_p=0.95": {"top_k": 100, "top_p": 0.95},
    "top_p=0.95+min_p=0.05": {"top_p": 0.95, "min_p": 0.05},
}
_SHAPE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")
_NOT_A_PASS = (" parameter(", " get-tuple-element(", " bitcast(", " tuple(", " dynamic-slice(")
_DEF = re.compile(r"\s*(?:ROOT )?%([\w.-]+) = (.*)")


@contextlib.contextmanager
def as_gpu_paths():
    """The sampler's GPU choices on any backend: one-pass argmax and membership sums, exact rows left to the
    kernel (a no-op here)."""
    saved = sampler_filters.exact_rows, sampler_filters.gpu_compute_capability, reference.gpu_compute_capability
    sampler_filters.exact_rows = lambda x, rows, floor, top_k, top_p, temperature, keys, tokens: tokens
    sampler_filters.gpu_compute_capability = reference.gpu_compute_capability = lambda: (9, 0)
    try:
        yield
    finally:
        sampler_filters.exact_rows, sampler_filters.gpu_compute_capability, reference.gpu_compute_capability = saved


def metadata(fields: dict, s: int, v: int):
    """(SamplingMetadata, SamplerConfig) of s seeded rows at temperature 0.6 with ``fields``."""
    seqs = [ScheduledSeq(seq_id=i, token_ids=[1], start=0, num_new_tokens=1, block_table=[0], num_prompt_tokens=1,
                         sampling_params=SamplingParams(temperature=0.6, seed=i, **fields), sample=True,
                         output_index=0, rng_seed=i) for i in range(s)]
    return build_sampling_metadata(seqs, s, v)


def full_passes(hlo_text: str, elements: int) -> int:
    """Top-level instructions of the ENTRY computation of optimized HLO text that read or write an array of at
    least ``elements`` elements: a fusion, a reduce, a sort, a scatter; each is one pass over [S, V] or more. A
    gather of a few elements (alone, or fused into a small elementwise fusion) moves no [S, V] data."""
    entry = hlo_text[hlo_text.index("ENTRY"):]
    entry = entry[:entry.index("\n}")]
    sizes, count = {}, 0
    for line in entry.splitlines()[1:]:
        m = _DEF.match(line)
        if not m:
            continue
        name, rest = m.groups()
        shapes = _SHAPE.findall(rest.split("(")[0] if "tuple(" not in rest else rest)
        sizes[name] = max([_elements(d) for d in shapes] + [0])
        if any(op in rest for op in _NOT_A_PASS) or "gather" in name or "take_along_axis" in line:
            continue  # no data moved, or a gather of a few elements
        if sizes[name] < elements and _is_small_gather(hlo_text, rest):
            continue
        operands = re.findall(r"%([\w.-]+)", rest)
        count += max([sizes[name]] + [sizes.get(o, 0) for o in operands]) >= elements
    return count


def _is_small_gather(hlo_text: str, rest: str) -> bool:
    """A loop fusion (small output) whose body gathers and reduces nothing: it reads a few elements of its big
    operand."""
    called = re.search(r"kind=kLoop, calls=%([\w.-]+)", rest)
    if not called:
        return False
    start = hlo_text.index(f"%{called.group(1)} ")
    body = hlo_text[start:hlo_text.index("\n}", start)]
    return " gather(" in body and " reduce(" not in body


def _elements(dims: str) -> int:
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n


def program_cost(fields: dict, s: int, v: int) -> dict:
    """Cost of the sampler program the runner serves the rows ``fields`` with (``start_up_cover``): its
    ``SamplerConfig`` flags, bytes accessed, flops, transcendentals (XLA's estimates) and full passes
    (``full_passes``)."""
    md, config = metadata(fields, s, v)
    config = start_up_cover(config)  # the same array shapes as the variant the rows need
    with as_gpu_paths():
        compiled = jax.jit(sampler.sample, static_argnums=2).lower(
            jax.ShapeDtypeStruct((s, v), jnp.float32), jax.device_put(md), config).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flags = {f: v for f, v in dataclasses.asdict(config).items() if isinstance(v, bool) and f != "greedy_only"}
    return {**flags,
            "bytes": cost.get("bytes accessed", 0.0), "flops": cost.get("flops", 0.0),
            "transcendentals": cost.get("transcendentals", 0.0), "full_passes": full_passes(compiled.as_text(), s * v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    sv = args.batch * args.vocab
    rows = {name: program_cost(fields, args.batch, args.vocab) for name, fields in SETTINGS.items()}
    plain = rows["plain"]
    print(f"S={args.batch} V={args.vocab} ({jax.devices()[0].platform}); bytes and flops per S*V element, "
          "x plain in brackets")
    print(f"{'setting':34} {'bytes':>14} {'flops':>14} {'transc.':>8} {'[S,V] ops':>9}")
    for name, r in rows.items():
        print(f"{name:34} {r['bytes'] / sv:7.1f} ({r['bytes'] / plain['bytes']:4.2f}x) "
              f"{r['flops'] / sv:7.1f} ({r['flops'] / plain['flops']:4.2f}x) {r['transcendentals'] / sv:8.2f} "
              f"{r['full_passes']:9d}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(["python", "scripts/sampler_cost.py", *sys.argv[1:]]),
                       "what": "XLA cost_analysis of the sampler program the runner serves each setting with (the "
                               "GPU's code paths); full_passes: top-level ops reading or writing >= S*V elements",
                       "batch": args.batch, "vocab": args.vocab, "platform": jax.devices()[0].platform,
                       "programs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
