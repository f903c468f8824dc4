"""Candidate int4 path (not used by the engine until measured): the weight held as XLA's native ``int4`` type, so
XLA's GPU GEMM fusion can read it packed (two per byte) and convert it inside the GEMM.

Why: on the H200 the engine's int4 path (``reference``: unpack int32 nibbles, dequantize, dot) is fused by XLA into
a Triton GEMM only for small M; at decode batches of 256 XLA writes a bf16 copy of every weight each step and then
runs cuBLAS, so AWQ ran at 0.62x bf16 (benchmarks/kernels_profile_h200.md). XLA's Triton GEMM emitter handles
``s4`` operands natively; whether it also keeps the per-group scale in the fusion at M = 256 is what
``scripts/bench_quant_matmul.py --kinds int4_s4`` measures.

Layout (converted once from the packed layout of reference.py, ``to_s4``):

* ``w_s4`` [K, N] int4: ``q - 8`` (values -8..7; AWQ/GPTQ store q in 0..15).
* ``scales`` [K // G, N] in the activation dtype.
* ``zero_term`` [K // G, N] float32: ``(8 - zeros) * scales``.

Since ``w = (q - z) * s = (q - 8) * s + (8 - z) * s``, the product splits into a GEMM over the int4 weight scaled
per group, plus the per-group sums of x times ``zero_term``: a [M, K // G] x [K // G, N] product, 1/G of the work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .reference import check_int4_operands, unpack_int4


def to_s4(qweight, scales, zeros, dtype=jnp.bfloat16) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Packed (reference.py) -> (w_s4 [K, N] int4, scales [K // G, N] ``dtype``, zero_term [K // G, N] float32)."""
    q = unpack_int4(qweight)
    w_s4 = (q - 8).astype(jnp.int8).astype(jnp.int4)
    zero_term = (8 - zeros.astype(jnp.float32)) * scales.astype(jnp.float32)
    return w_s4, scales.astype(dtype), zero_term


def int4_matmul_s4(x: jax.Array, w_s4, scales, zero_term, out_dtype=None) -> jax.Array:
    """x [M, K] @ W [K, N] -> [M, N] for W given as ``to_s4``'s triple; float32 accumulation."""
    (m, k), n = x.shape, w_s4.shape[1]
    if w_s4.dtype != jnp.int4 or w_s4.shape[0] != k:
        raise ValueError(f"w_s4 must be int4 [K={k}, N], got {w_s4.dtype} {w_s4.shape}")
    groups = scales.shape[0]
    if k % groups or scales.shape != (groups, n) or zero_term.shape != (groups, n):
        raise ValueError(f"scales {scales.shape} / zero_term {zero_term.shape} must be [K // G, N={n}] with G "
                         f"dividing K={k}")
    w = (w_s4.astype(x.dtype).reshape(groups, k // groups, n) * scales[:, None].astype(x.dtype)).reshape(k, n)
    main = jnp.dot(x, w, preferred_element_type=jnp.float32)
    group_sums = x.astype(jnp.float32).reshape(m, groups, k // groups).sum(-1)
    out = main + jnp.dot(group_sums, zero_term, preferred_element_type=jnp.float32)
    return out.astype(out_dtype or x.dtype)


def int4_matmul_s4_from_packed(x, qweight, scales, zeros, out_dtype=None) -> jax.Array:
    """Convenience for tests: ``to_s4`` then ``int4_matmul_s4`` (converting on every call defeats the purpose)."""
    check_int4_operands(x, qweight, scales, zeros)
    return int4_matmul_s4(x, *to_s4(qweight, scales, zeros, x.dtype), out_dtype)
