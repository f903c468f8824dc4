"""Candidate int4 path (opt-in until measured: ``JAXLLM_INT4_LAYOUT=s4``, jaxllm/weights/int4_layout.py): the
weight read through XLA's own ``int4`` type, so XLA's GPU GEMM fusion can convert it inside the GEMM.

Why: on the H200 the engine's int4 path (``reference``: unpack int32 nibbles, dequantize, dot) is fused by XLA into
a Triton GEMM only for small M; at decode batches of 256 XLA writes a bf16 copy of every weight each step and then
runs cuBLAS, so AWQ ran at 0.62x bf16 (benchmarks/kernels_profile_h200.md). XLA's Triton GEMM emitter handles
``s4`` operands natively; whether it also keeps the per-group scale in the fusion at M = 256 is what
``scripts/bench_quant_matmul.py --kinds int4_s4`` measures.

Layout (converted once from the packed layout of reference.py, ``to_s4``):

* ``w_u8`` [K, *N[:-1], N[-1] // 2] uint8: two 4-bit values ``q - 8`` (-8..7; AWQ/GPTQ store q in 0..15) per
  byte along the last output dim, the even one in the low nibble. In the step it is bitcast to int4
  ([..., N[-1] // 2, 2], the same bytes) and reshaped to [K, *N]. Stored as bytes rather than as an int4 array
  because XLA:CPU rejected sharded int4 parameters (its compiled programs require a packed layout the arrays
  did not have); the bitcast inside the program sidesteps that and is free.
* ``scales`` [K // G, *N] in the activation dtype.
* ``zero_term`` [K // G, *N] float32: ``(8 - zeros) * scales``.

Since ``w = (q - z) * s = (q - 8) * s + (8 - z) * s``, the product splits into a GEMM over the int4 weight scaled
per group, plus the per-group sums of x times ``zero_term``: a [M, K // G] x [K // G, N] product, 1/G of the work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .reference import check_int4_operands, unpack_int4


def to_s4(qweight, scales, zeros, dtype=jnp.bfloat16) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Packed (reference.py, [K // 8, *N]) -> (w_u8 [K, *N[:-1], N[-1] // 2] uint8, scales [K // G, *N] ``dtype``,
    zero_term [K // G, *N] float32). The last output dim must be even."""
    if qweight.shape[-1] % 2:
        raise ValueError(f"the s4 layout packs pairs along the last output dim; {qweight.shape[-1]} is odd")
    v = unpack_int4(qweight) - 8  # int32 -8..7
    w_u8 = ((v[..., 0::2] & 0xF) | ((v[..., 1::2] & 0xF) << 4)).astype(jnp.uint8)
    zero_term = (8 - zeros.astype(jnp.float32)) * scales.astype(jnp.float32)
    return w_u8, scales.astype(dtype), zero_term


def s4_values(w_u8: jax.Array) -> jax.Array:
    """w_u8 [..., N // 2] uint8 -> [..., N] int4 (q - 8): a bitcast and a reshape, no arithmetic."""
    return jax.lax.bitcast_convert_type(w_u8, jnp.int4).reshape(*w_u8.shape[:-1], 2 * w_u8.shape[-1])


def dequantize_s4(w_u8, scales, zero_term, dtype=jnp.float32) -> jax.Array:
    """(w_u8, scales / zero_term [K // G, *N]) -> w [K, *N] in ``dtype`` (float32 math)."""
    q = s4_values(w_u8)
    k, rest = q.shape[0], q.shape[1:]
    groups = scales.shape[0]
    w = (q.astype(jnp.float32).reshape(groups, k // groups, *rest) * scales.astype(jnp.float32)[:, None]
         + zero_term.astype(jnp.float32)[:, None])
    return w.reshape(k, *rest).astype(dtype)


def int4_matmul_s4(x: jax.Array, w_u8, scales, zero_term, out_dtype=None) -> jax.Array:
    """x [..., K] @ W [K, N] -> [..., N] for W given as ``to_s4``'s triple (2-D: w_u8 [K, N // 2], scales and
    zero_term [K // G, N]); float32 accumulation."""
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    (m, k), n = x.shape, 2 * w_u8.shape[-1]
    if w_u8.dtype != jnp.uint8 or w_u8.shape[0] != k:
        raise ValueError(f"w_u8 must be uint8 [K={k}, N // 2], got {w_u8.dtype} {w_u8.shape}")
    groups = scales.shape[0]
    if k % groups or scales.shape != (groups, n) or zero_term.shape != (groups, n):
        raise ValueError(f"scales {scales.shape} / zero_term {zero_term.shape} must be [K // G, N={n}] with G "
                         f"dividing K={k}")
    w = (s4_values(w_u8).astype(x.dtype).reshape(groups, k // groups, n)
         * scales[:, None].astype(x.dtype)).reshape(k, n)
    main = jnp.dot(x, w, preferred_element_type=jnp.float32)
    group_sums = x.astype(jnp.float32).reshape(m, groups, k // groups).sum(-1)
    out = main + jnp.dot(group_sums, zero_term, preferred_element_type=jnp.float32)
    return out.astype(out_dtype or x.dtype).reshape(*lead, n)


def int4_matmul_s4_from_packed(x, qweight, scales, zeros, out_dtype=None) -> jax.Array:
    """Convenience for tests: ``to_s4`` then ``int4_matmul_s4`` (converting on every call defeats the purpose)."""
    check_int4_operands(x, qweight, scales, zeros)
    return int4_matmul_s4(x, *to_s4(qweight, scales, zeros, x.dtype), out_dtype)
