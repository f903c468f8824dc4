"""The card's own peaks, measured the way ../shared/BENCHMARKS.md measured the H200's: a bf16 8192^3 matmul
through jitted JAX (FLOP/s), a device-to-device copy through PyTorch (bytes read + written per second), and the
elementwise ``a * 2`` through JAX for comparison. The roofline of a run on this card uses these figures.

    python3 scripts/device_peaks.py --output peaks.json
"""

from __future__ import annotations

import argparse
import json
import time


def best_seconds(run, sync, repeats: int = 5, inner: int = 20) -> float:
    """Fastest mean over ``repeats`` batches of ``inner`` calls of ``run`` (``sync`` waits for the device)."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            out = run()
        sync(out)
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def jax_peaks(n: int, copy_bytes: int) -> dict:
    """bf16 matmul FLOP/s and elementwise read+write bytes/s through jitted JAX."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x, y: x @ y)
    mm_s = best_seconds(lambda: matmul(a, b), lambda out=None: jax.block_until_ready(out))
    x = jnp.ones((copy_bytes // 2,), jnp.bfloat16)
    double = jax.jit(lambda v: v * 2)
    ew_s = best_seconds(lambda: double(x), lambda out=None: jax.block_until_ready(out))
    return {"device": jax.devices()[0].device_kind, "matmul_flops": 2 * n**3 / mm_s,
            "elementwise_bytes_per_s": 2 * copy_bytes / ew_s}


def torch_copy_bytes_per_s(copy_bytes: int) -> float | None:
    """Device-to-device copy (bytes read + written per second) through PyTorch, or None without torch/CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    buffers = [torch.empty(copy_bytes, dtype=torch.uint8, device="cuda") for _ in range(2)]
    seconds = best_seconds(lambda: buffers[1].copy_(buffers[0]), lambda out=None: torch.cuda.synchronize())
    buffers.clear()
    torch.cuda.empty_cache()  # before JAX takes its share of the memory
    return 2 * copy_bytes / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192, help="matmul size (n x n x n)")
    parser.add_argument("--copy-gib", type=float, default=2.0, help="bytes copied per call, GiB")
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()
    copy_bytes = int(args.copy_gib * 2**30)
    result = {"copy_bytes_per_s": torch_copy_bytes_per_s(copy_bytes), **jax_peaks(args.n, copy_bytes)}
    result["command"] = "python3 scripts/device_peaks.py"
    print(f"{result['device']}: bf16 matmul {result['matmul_flops'] / 1e12:.0f} TFLOP/s, "
          f"copy {(result['copy_bytes_per_s'] or 0) / 1e12:.2f} TB/s (torch), "
          f"a*2 {result['elementwise_bytes_per_s'] / 1e12:.2f} TB/s (jax)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
