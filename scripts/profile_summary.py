"""Where the GPU time of a traced run goes: sums the kernels of a ``jax.profiler`` trace (e.g. ``jaxllm bench
--profile-dir DIR``) by category and by name, so a step's time can be split into GEMMs, attention, the
quantization's converts and the rest without a trace viewer.

    python3 scripts/profile_summary.py DIR [--top 25] [--json out.json]

Reads every ``*.xplane.pb`` under DIR with ``jax.profiler.ProfileData``. On a GPU the device planes
("/device:GPU:N") hold one line per CUDA stream whose events are kernels; only those lines are summed (the
derived "XLA Ops" / "XLA Modules" lines, ``DERIVED_LINES``, would count the same time twice; the lines summed are
printed). Without device planes (a CPU run) it
falls back to the host plane's lines so the script can be checked anywhere. Each top kernel is printed with where
it comes from when the trace says (its HLO module, the JAX name scope of its op, the op's HLO text), so an
unnamed fusion can be traced back to the model code that produced it. Categories come from kernel names
(``CATEGORIES``, first match wins); times are totals over the trace, and ``per step`` divides by ``--steps``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re

# lines of a device plane that repeat the kernels' time under other names (the rest are CUDA streams)
DERIVED_LINES = {"XLA Modules", "XLA Ops", "XLA TraceMe", "Framework Ops", "Framework Name Scope", "Source",
                 "Steps", "Launch Stats", "TensorFlow Ops", "TensorFlow Name Scope"}

# (category, pattern over the kernel name); first match wins
CATEGORIES = (
    ("attention (ours)", r"ragged_paged_attention|paged_attention|flash|attention"),
    ("int4 matmul (ours)", r"int4_matmul"),
    ("Mosaic GPU kernel (ours, unnamed)", r"mosaic_gpu"),  # named after the kernel body's function
    ("gemm: triton fusion", r"triton_gemm|gemm_fusion|__triton_nested_gemm|triton.*dot"),
    ("gemm: cublas/cutlass", r"gemm|cublas|cutlass|nvjet|xmma|sm90_|sm80_|s16816|h16816|e4m3"),
    ("collective (nccl)", r"nccl|all_reduce|allreduce|all-reduce|all_gather"),
    ("reduction", r"reduce|reduction"),
    ("copy / transpose", r"copy|transpose|memcpy|memset|dynamic_update_slice|scatter|gather"),
    ("other fusion", r"fusion|loop_|input_"),
)


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


OP_STATS = ("hlo_module", "hlo_op", "tf_op", "long_name", "name")  # what says where a kernel comes from


def _where(stats) -> dict:
    """The stats of an event that say which HLO op / JAX name scope it runs (``OP_STATS``), as strings."""
    return {str(k): str(v) for k, v in stats if str(k) in OP_STATS}


def kernel_events(trace_dir: str, ops: dict | None = None):
    """Yields ("plane line", kernel name, duration ns, its ``_where`` stats) for every kernel of every device
    stream in the trace. ``ops``, when given, collects the derived "XLA Ops" line's ``_where`` stats by op name
    (there the long HLO text and the JAX name scope of each op are recorded)."""
    from jax.profiler import ProfileData

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir!r}")
    for path in files:
        planes = list(ProfileData.from_file(path).planes)
        device = [p for p in planes if p.name.startswith("/device:")]
        for plane in device or [p for p in planes if p.name == "/host:CPU"]:
            for line in plane.lines:
                if device and line.name in DERIVED_LINES:
                    if ops is not None and line.name == "XLA Ops":
                        for event in line.events:
                            ops.setdefault(event.name, _where(event.stats))
                    continue
                for event in line.events:
                    yield f"{plane.name} {line.name}", event.name, event.duration_ns, _where(event.stats)


def summarize(trace_dir: str, top: int = 25) -> dict:
    by_name: dict[str, list] = collections.defaultdict(lambda: [0.0, 0, {}])
    planes = set()
    ops: dict[str, dict] = {}
    for plane, name, ns, where in kernel_events(trace_dir, ops):
        planes.add(plane)
        entry = by_name[name]
        entry[0] += ns
        entry[1] += 1
        entry[2] = entry[2] or where
    total = sum(ns for ns, _, _ in by_name.values())
    by_cat: dict[str, float] = collections.defaultdict(float)
    for name, (ns, _, _) in by_name.items():
        by_cat[category(name)] += ns
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]

    def origin(where: dict) -> dict:  # the kernel's own stats, completed by its op's on the "XLA Ops" line
        return {**ops.get(where.get("hlo_op", ""), {}), **where}

    return {"planes": sorted(planes), "total_ms": total / 1e6,
            "categories": {c: ns / 1e6 for c, ns in sorted(by_cat.items(), key=lambda kv: -kv[1])},
            "top": [{"name": n, "ms": ns / 1e6, "calls": calls, "category": category(n), "origin": origin(where)}
                    for n, (ns, calls, where) in ranked]}


def print_summary(s: dict, steps: int | None) -> None:
    per = f" / per step over {steps}" if steps else ""
    print(f"kernel time {s['total_ms']:.1f} ms over {', '.join(s['planes'])}{per}")
    for c, ms in s["categories"].items():
        step = f"{ms / steps:9.3f}" if steps else ""
        print(f"  {c:24} {ms:10.1f} ms {100 * ms / max(s['total_ms'], 1e-9):5.1f}% {step}")
    print("top kernels:")
    for k in s["top"]:
        print(f"  {k['ms']:10.1f} ms {k['calls']:7d} calls  [{k['category']}] {k['name'][:110]}")
        origin = k.get("origin") or {}
        scope = origin.get("tf_op") or origin.get("name")
        if origin.get("hlo_module") or scope:
            print(f"  {'':10}    {origin.get('hlo_module', '?')}: {(scope or origin.get('hlo_op', ''))[:140]}")
        if origin.get("long_name"):
            print(f"  {'':10}    {origin['long_name'][:200]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_dir")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, help="engine steps in the trace: also print ms per step")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    s = summarize(args.trace_dir, args.top)
    s["steps"] = args.steps
    print_summary(s, args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=2)


if __name__ == "__main__":
    main()
