"""JAX's Mosaic GPU FlashAttention-3 (jax.experimental.pallas.ops.gpu.attention_mgpu, dense, causal) against cuDNN
on the prefill shapes of scripts/bench_kernels.py (32 q / 8 kv heads, D=128): how far a wgmma/TMA warp-specialized
kernel gets on the H200, before writing a paged one (issue 4, target 350 TFLOP/s at 1 x 8k). float16 inputs: jax
0.11.2's kernel allocates its shared-memory tiles in float16 whatever the input dtype.

    python scripts/probe_fa3.py
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import HK, HQ, D, causal_flops  # noqa: E402
from bench_timing import timeit  # noqa: E402


def main():
    from jax.experimental.pallas.ops.gpu import attention_mgpu as fa3

    print(f"{'shape':10} {'impl':34} {'us':>8} {'TFLOP/s':>8}")
    for nseq, length in ((1, 8192), (8, 1024)):
        flops = causal_flops([length] * nseq)
        q, k, v = (jax.random.normal(jax.random.key(i), (nseq, length, h, D), jnp.float32).astype(jnp.float16)
                   for i, h in ((0, HQ), (1, HK), (2, HK)))
        impls = {"cudnn": jax.jit(lambda a, b, c: jax.nn.dot_product_attention(a, b, c, is_causal=True,
                                                                               implementation="cudnn"))}
        for bq, bkv, st in ((128, 128, 2), (128, 128, 3), (128, 64, 4), (64, 128, 2)):
            cfg = fa3.TuningConfig(block_q=bq, block_kv=bkv, max_concurrent_steps=st, causal=True)
            impls[f"fa3_bq{bq}_bkv{bkv}_st{st}"] = jax.jit(lambda a, b, c, cfg=cfg: fa3.attention(a, b, c, cfg))
        for name, fn in impls.items():
            try:
                t, _ = timeit(fn, [(q, k, v)], reps=5)
                print(f"{nseq}x{length:<8} {name:34} {t * 1e6:8.0f} {flops / t / 1e12:8.0f}", flush=True)
            except Exception as e:  # noqa: BLE001 - a config this jax rejects: reported, the rest goes on
                print(f"{nseq}x{length:<8} {name:34} FAILED {type(e).__name__}: {str(e)[:160]}", flush=True)


if __name__ == "__main__":
    main()
