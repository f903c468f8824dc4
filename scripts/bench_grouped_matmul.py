"""Microbenchmark of the MoE grouped matmul: our Pallas Triton kernel and XLA's ragged_dot against a dense GEMM
of the same active FLOPs, at the expert shapes of Qwen3-30B-A3B and Mixtral-8x7B (bf16, one GPU).

For T tokens with top-k routing the grouped matmul has M = T*k rows split over E experts (uniform random routing,
multinomial group sizes); the dense baseline multiplies [M, K] by one [K, N] weight (the same 2*M*K*N FLOPs, but
one weight read instead of every expert the tokens picked). Reported per row: microseconds, TFLOP/s on the active
FLOPs, the HBM bytes the grouped product must move (touched experts' weights + rows in + rows out) as TB/s, and
the kernel's time relative to the dense GEMM. Writes benchmarks/grouped_matmul_<tag>.json and .md.

  python scripts/bench_grouped_matmul.py                       # on the GPU machine (~2-4 min)
  python scripts/bench_grouped_matmul.py --quick --interpret   # CPU smoke test of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ops.grouped_matmul.dispatch import grouped_matmul_ragged_dot
from ops.grouped_matmul.layout import grouped_layout
from ops.grouped_matmul.pallas_triton import grouped_matmul_tiles, plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_timing import timeit

# (model, experts, top-k, [(product, K, N)])
SHAPES = [("qwen3-30b-a3b", 128, 8, [("gate_up", 2048, 2 * 768), ("down", 768, 2048)]),
          ("mixtral-8x7b", 8, 2, [("gate_up", 4096, 2 * 14336), ("down", 14336, 4096)])]
TOKENS = (1, 16, 64, 256, 1024, 4096)
RAGGED_MAX_BYTES = 8 << 30  # ragged_dot's dense rewrite materializes ~M x G x N values; skip it beyond this


def bench_one(rng, experts, top_k, k, n, tokens, interpret, dtype=jnp.bfloat16):
    m = tokens * top_k
    sizes = rng.multinomial(m, np.ones(experts) / experts).astype(np.int32)
    key = jax.random.key(int(rng.integers(1 << 30)))
    kx, kw, kd = jax.random.split(key, 3)
    lhs = jax.random.normal(kx, (m, k), jnp.float32).astype(dtype)
    rhs = (0.02 * jax.random.normal(kw, (experts, k, n), jnp.float32)).astype(dtype)
    dense_w = (0.02 * jax.random.normal(kd, (k, n), jnp.float32)).astype(dtype)
    gs = jnp.asarray(sizes)
    flops = 2 * m * k * n
    touched = int((sizes > 0).sum())
    nbytes = (touched * k * n + m * k + m * n) * jnp.dtype(dtype).itemsize
    row = {"tokens": tokens, "rows": m, "K": k, "N": n, "experts_touched": touched}
    # the kernel as the MoE layer runs it: rows already in the slot order (the layer gathers them there from x),
    # the layout built from the group sizes inside the timed call
    block_m = plan(m, k, n, experts).block_m
    slotted = jnp.take(lhs, grouped_layout(gs, m, block_m).source_rows(), axis=0)
    candidates = {"pallas_triton": jax.jit(lambda a, b, s: grouped_matmul_tiles(
                      a, b, grouped_layout(s, m, block_m), dtype, interpret=interpret)),
                  "dense_gemm": jax.jit(lambda a, w: a @ w)}
    if m * experts * n * 4 <= RAGGED_MAX_BYTES:
        candidates["ragged_dot"] = jax.jit(grouped_matmul_ragged_dot)
    for name, fn in candidates.items():
        args = {"dense_gemm": [(lhs, dense_w)], "pallas_triton": [(slotted, rhs, gs)]}.get(name, [(lhs, rhs, gs)])
        try:
            sec, compile_s = timeit(fn, args, reps=3 if interpret else 10, rounds=1 if interpret else 5,
                                    warmup_s=0 if interpret else 0.3)
        except Exception as e:  # noqa: BLE001 - record the failure (e.g. out of memory) and go on
            row[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        row[name] = {"us": sec * 1e6, "tflops": flops / sec / 1e12, "compile_s": compile_s}
        if name != "dense_gemm":
            row[name]["tb_s"] = nbytes / sec / 1e12
    if "us" in row["pallas_triton"] and "us" in row["dense_gemm"]:
        row["pallas_vs_dense"] = row["dense_gemm"]["us"] / row["pallas_triton"]["us"]
    return row


def write_markdown(results, path):
    lines = [f"# Grouped matmul (MoE experts), {results['device']}, bf16, jax {results['jax']}", "",
             ("Active FLOPs 2*M*K*N; TB/s counts the touched experts' weights + rows in/out. "
             "`vs dense` = dense GEMM time / kernel time (1.0 = as fast as a dense GEMM of the same FLOPs)."), "",
             ("| model | product | tokens | rows | touched | pallas us | TFLOP/s | TB/s | ragged_dot us | dense us | "
             "vs dense |"), "|---|---|---|---|---|---|---|---|---|---|---|"]

    def us(r, name):
        v = r.get(name, {})
        return f"{v['us']:.1f}" if "us" in v else ("skipped" if not v else "error")

    for r in results["rows"]:
        p = r["pallas_triton"]
        lines.append(f"| {r['model']} | {r['product']} | {r['tokens']} | {r['rows']} | {r['experts_touched']} | "
                     f"{us(r, 'pallas_triton')} | {p.get('tflops', 0):.0f} | {p.get('tb_s', 0):.2f} | "
                     f"{us(r, 'ragged_dot')} | {us(r, 'dense_gemm')} | {r.get('pallas_vs_dense', 0):.2f} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke test)")
    ap.add_argument("--interpret", action="store_true", help="Pallas interpret mode (CPU)")
    ap.add_argument("--out-dir", default="benchmarks")
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    dev = jax.devices()[0]
    results = {"device": getattr(dev, "device_kind", dev.platform), "jax": jax.__version__, "rows": []}
    shapes = [("tiny", 8, 2, [("gate_up", 64, 64), ("down", 32, 64)])] if args.quick else SHAPES
    base = os.path.join(args.out_dir, f"grouped_matmul_{args.tag}")
    os.makedirs(args.out_dir, exist_ok=True)
    for model, experts, top_k, products in shapes:
        for product, k, n in products:
            for tokens in ((4, 32) if args.quick else TOKENS):
                row = {"model": model, "product": product,
                       **bench_one(rng, experts, top_k, k, n, tokens, args.interpret)}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                with open(base + ".json", "w") as f:  # after every row: a run cut short keeps its numbers
                    json.dump(results, f, indent=1)
                write_markdown(results, base + ".md")
    with open(base + ".md") as f:
        print(f.read())


if __name__ == "__main__":
    main()
