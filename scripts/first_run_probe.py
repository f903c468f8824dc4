"""Does launching a kernel block the host? For each program: the host time for N back-to-back calls to return
(asynchronous dispatch: should be far below the GPU time) against the time until the last one finishes.

Why (ops/paged_attention/NOTES.md, session 9): under JAXLLM_ATTENTION_IMPL=pallas_mosaic the 16 x 8k engine run
spent 3% less GPU time but 15 ms more host time a step, and the GPU idled more. If a Mosaic GPU custom call
(or its inputs) makes the host wait, its host time here will track its GPU time; if the cost is a one-time one
(the engine compiles every program at start-up but runs none, so first executions land in ``generate``: a
24-step run feels them), the first execution will stand out.

Usage (GPU machine): python3 scripts/first_run_probe.py [--calls 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from bench_kernels import D, paged_batch

from ops.paged_attention.pallas_attention import ragged_paged_attention_pallas


def probe(fn, args, calls: int) -> dict:
    """The first and second execution of the freshly compiled program (milliseconds, each waited for: one-time
    costs such as loading a Mosaic GPU kernel into the CUDA context or recording a command buffer land in the
    first), then host microseconds per call until ``calls`` calls return and per call until the last is ready."""
    compiled = fn.lower(*args).compile()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    second = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = [compiled(*args) for _ in range(calls)]
    t_host = time.perf_counter() - t0
    jax.block_until_ready(outs)
    t_all = time.perf_counter() - t0
    return {"first_ms": 1e3 * first, "second_ms": 1e3 * second, "host_us_per_call": 1e6 * t_host / calls,
            "done_us_per_call": 1e6 * t_all / calls, "host_share": t_host / t_all}


def int4_case():
    from ops.quant_matmul import int4_matmul_nk
    k, n, g = 4096, 28672, 128
    key = jax.random.key(0)
    x = jax.random.normal(key, (64, k), jnp.float32).astype(jnp.bfloat16)
    wt = jax.random.randint(key, (n, k), -8, 8, jnp.int32).astype(jnp.int4)
    scales = jnp.full((k // g, n), 0.01, jnp.float16)
    zeros = jnp.full((k // g, n), 8, jnp.int8)
    return jax.jit(lambda *a: int4_matmul_nk(*a)), (x, wt, scales, zeros)


def mosaic_compile_seconds() -> dict:
    """Seconds to compile the int4 kernel (gate_up, 16 / 64 rows) at the plan's tk 256 and at tk 128. jaxlib
    compiles each Mosaic GPU kernel when XLA instantiates the program, one kernel at a time (a process-wide
    lock) and with no disk cache, so an AWQ model pays every kernel at every start-up (~45 s of its 57-72)."""
    import dataclasses

    from ops.quant_matmul.mosaic_gpu import int4_matmul_mosaic, mosaic_plan
    k, n, g = 4096, 28672, 128
    out = {}
    for m in (16, 64):
        plan = mosaic_plan(m, k, n, g, 132)
        for tiles in (plan, dataclasses.replace(plan, tk=128)):
            args = (jax.ShapeDtypeStruct((m, k), jnp.bfloat16), jax.ShapeDtypeStruct((n, k), jnp.int4),
                    jax.ShapeDtypeStruct((k // g, n), jnp.float16), jax.ShapeDtypeStruct((k // g, n), jnp.int8))
            lowered = jax.jit(lambda *a, t=tiles: int4_matmul_mosaic(*a, tiles=t)).lower(*args)
            t0 = time.perf_counter()
            lowered.compile()
            out[f"gate_up_m{m}_{tiles.name}"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    compiles = mosaic_compile_seconds()  # first: a kernel compiled earlier in the process is a cache hit
    for name, sec in compiles.items():
        print(f"compile {name:32s} {sec:6.2f} s")
    rng = np.random.default_rng(0)
    q, kv, qsl, sl, bt = paged_batch(rng, [8192], [8192], sequential=True)[0]
    cases = {
        "prefill_triton_1x8k": (jax.jit(lambda *a: ragged_paged_attention_pallas(*a, sm_scale=D ** -0.5)),
                                (q, kv, qsl, sl, bt)),
        "prefill_mosaic_1x8k": (jax.jit(lambda *a: ragged_paged_attention_pallas(*a, sm_scale=D ** -0.5,
                                                                                 prefill_impl="mosaic")),
                                (q, kv, qsl, sl, bt)),
        "int4_gate_up_64rows": int4_case(),
    }
    results = {}
    print(f"{'program':24s} {'first ms':>9s} {'second ms':>9s} {'host us/call':>12s} {'done us/call':>12s} "
          f"{'host share':>10s}")
    for name, (fn, a) in cases.items():
        try:
            r = probe(fn, a, args.calls)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"{name:24s} FAILED {type(e).__name__}: {str(e)[:200]}")
            continue
        results[name] = r
        print(f"{name:24s} {r['first_ms']:9.1f} {r['second_ms']:9.1f} {r['host_us_per_call']:12.1f} "
              f"{r['done_us_per_call']:12.1f} {r['host_share']:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "jax": jax.__version__, "calls": args.calls,
                       "results": results, "mosaic_compile_s": compiles}, f, indent=1)


if __name__ == "__main__":
    main()
