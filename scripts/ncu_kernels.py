"""Runs one of our GPU kernels a few times on the shapes where its speed is in question, for Nsight Compute to
profile (scripts/gpu_ncu.sh): ``int4`` (the Mosaic GPU int4 kernel, Llama-8B gate_up at 64 rows, its plan),
``prefill_triton`` / ``prefill_mosaic`` (ragged paged attention, one 8k-token causal sequence, 32 / 8 heads, D=128).

    python3 scripts/ncu_kernels.py int4|prefill_triton|prefill_mosaic
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ops.paged_attention.pallas_attention import ragged_paged_attention_pallas  # noqa: E402
from ops.quant_matmul import mosaic_plan, to_nk_layout  # noqa: E402
from ops.quant_matmul.mosaic_gpu import int4_matmul_mosaic  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import D, HQ, paged_batch  # noqa: E402

CALLS = 3  # ncu skips the first (compilation and autotuning launches are filtered by kernel name)


def int4_gate_up(m=64, k=4096, n=2 * 14336, group=128):
    key = jax.random.key(0)
    x = jax.random.normal(key, (m, k), jnp.float32).astype(jnp.bfloat16)
    qweight = jax.lax.bitcast_convert_type(jax.random.bits(key, (k // 8, n), jnp.uint32), jnp.int32)
    wt = jax.jit(to_nk_layout)(qweight)
    scales = jnp.full((k // group, n), 1e-3, jnp.float16)
    zeros = jnp.full((k // group, n), 8, jnp.int8)
    fn = jax.jit(lambda *a: int4_matmul_mosaic(*a, tiles=mosaic_plan(m, k, n, group, 132)))
    return lambda: fn(x, wt, scales, zeros)


def prefill(impl: str, length=8192):
    q, kv, qsl, sl, tables = paged_batch(np.random.default_rng(0), [length], [length])[0]
    extra = {"prefill_impl": "mosaic", "mosaic_min_q_len": 1} if impl == "mosaic" else {}
    fn = jax.jit(lambda *a: ragged_paged_attention_pallas(*a, sm_scale=D ** -0.5, **extra))
    assert q.shape[1] == HQ
    return lambda: fn(q, kv, qsl, sl, tables)


def main():
    what = sys.argv[1]
    run = {"int4": int4_gate_up, "prefill_triton": lambda: prefill("triton"),
           "prefill_mosaic": lambda: prefill("mosaic")}[what]()
    for _ in range(CALLS):
        jax.block_until_ready(run())
    print(f"{what}: {CALLS} calls done")


if __name__ == "__main__":
    main()
