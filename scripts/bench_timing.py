"""Sustained GPU timing shared by the microbenchmarks (scripts/bench_kernels.py, scripts/bench_quant_matmul.py)."""

from __future__ import annotations

import statistics
import time

import jax


def timeit(fn, arg_sets, reps=10, rounds=5, warmup_s=0.3):
    """Median seconds per call over ``rounds`` rounds of ``reps`` async calls, rotating through arg_sets
    (different buffers, so a small working set does not sit in L2), after ``warmup_s`` seconds of calls.
    Returns (seconds, compile_seconds).

    Why the warm-up and the bursts: an idle H200 sits at 345 MHz, and single synchronized calls time XLA's bf16
    gate_up at 64 rows at 200-420 us where the engine's trace shows 59 us."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*arg_sets[0]))
    compile_s = time.perf_counter() - t0
    for a in arg_sets[1:]:
        jax.block_until_ready(fn(*a))
    t_end, i = time.perf_counter() + warmup_s, 0
    while time.perf_counter() < t_end:
        jax.block_until_ready(fn(*arg_sets[i % len(arg_sets)]))
        i += 1
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = None
        for i in range(reps):
            out = fn(*arg_sets[i % len(arg_sets)])
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times), compile_s
