"""Time the batched LoRA product's implementations (jaxllm.ops.lora) on Llama-3.1-8B projection shapes.

For each token count and projection it reports the one-hot and ragged_dot forms' time next to the base
projection's GEMM (what the LoRA update adds to), with 8 adapters of rank 16 plus slot 0 and the tokens spread
evenly over the slots. Prints a Markdown table; ``--output`` also writes it as JSON.

  python scripts/bench_lora.py                 # on the GPU machine (~1 min)
  python scripts/bench_lora.py --quick         # small shapes, a smoke test on the CPU
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxllm.ops.lora import IMPLS

# name: (in features, out features) of Llama-3.1-8B's projections (q and the fused gate_up's halves)
SHAPES = {"q_proj": (4096, 4096), "k_proj": (4096, 1024), "gate_proj": (4096, 14336), "down_proj": (14336, 4096)}


def timed(fn, *args, reps: int = 20) -> float:
    """Median wall time in µs of a jitted call (compiled and warmed up first)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def run(tokens: list[int], shapes: dict, slots_n: int, rank: int, dtype) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for name, (n_in, n_out) in shapes.items():
        a = jnp.asarray(rng.standard_normal((n_in, slots_n, rank)) / np.sqrt(n_in), dtype)
        b = jnp.asarray(0.01 * rng.standard_normal((slots_n, rank, n_out)), dtype)
        w = jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), dtype)
        for t in tokens:
            x = jnp.asarray(rng.standard_normal((t, n_in)), dtype)
            slots = jnp.asarray(np.arange(t) % slots_n, jnp.int32)
            row = {"target": name, "tokens": t, "base_us": timed(jax.jit(jnp.matmul), x, w)}
            for impl in ("onehot", "ragged"):
                row[f"{impl}_us"] = timed(jax.jit(IMPLS[impl]), x, a, b, slots)
            rows.append(row)
            print(f"| {name} | {t} | {row['base_us']:.1f} | {row['onehot_us']:.1f} | {row['ragged_us']:.1f} |",
                  flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes (CPU smoke test)")
    p.add_argument("--output", help="write the rows as JSON here")
    args = p.parse_args(argv)
    shapes = {"q_proj": (256, 256)} if args.quick else SHAPES
    tokens = [16, 64] if args.quick else [64, 256, 2048, 8192]
    print(f"device: {jax.devices()[0].device_kind}; 9 slots of rank 16, bf16\n")
    print("| target | tokens | base GEMM µs | one-hot µs | ragged_dot µs |\n| --- | --- | --- | --- | --- |")
    rows = run(tokens, shapes, 9, 16, jnp.bfloat16)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
