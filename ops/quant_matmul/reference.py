"""Reference (pure jnp) int4 weight-only matmul: unpack, dequantize, one dot. The oracle and the CPU path.

Packed layout (K input channels, N output channels, G = group size, K % G == 0, K % 8 == 0):

* ``qweight`` [K // 8, N] int32: nibble j (bits 4j..4j+3) of row r is input channel 8r + j, a value 0..15
  (GPTQ's packing along the input dim, which AWQ checkpoints are repacked into at load time).
* ``scales`` [K // G, N] float (float16 as in the checkpoints, or bfloat16/float32).
* ``zeros`` [K // G, N] int8, the zero point 0..15 (unpacked; 1/G byte per weight).

``w[k, n] = (q[k, n] - zeros[k // G, n]) * scales[k // G, n]``: asymmetric 4-bit, one (scale, zero) per group
of G consecutive input channels and output channel. The group size is recovered from the shapes
(``K // scales.shape[0]``), so a per-channel weight is simply one group of K.

The "nk" layout (Hopper, read by the Mosaic GPU kernel, mosaic_gpu.py): ``wt`` [N, K] int4 holding ``q - 8``
(converted once at load time by ``to_nk_layout``), the same ``scales`` and ``zeros``. ``*_nk`` functions here are
its reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PACK = 8  # int4 values per int32


def check_int4_operands(x, qweight, scales, zeros) -> tuple[int, int, int]:
    """(K, N, G) of a valid call; a ValueError naming the offending shape/dtype otherwise."""
    if qweight.dtype != jnp.int32 or qweight.ndim != 2:
        raise ValueError(f"qweight must be int32 [K // 8, N], got {qweight.dtype} {qweight.shape}")
    k, n = qweight.shape[0] * PACK, qweight.shape[1]
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features but qweight packs {k} ([{k // PACK}, {n}])")
    return _check_groups(k, n, scales, zeros)


def _check_groups(k: int, n: int, scales, zeros) -> tuple[int, int, int]:
    """(K, N, G) once scales / zeros are [K // G, N] for some G dividing K; a ValueError otherwise."""
    if scales.ndim != 2 or scales.shape[1] != n or k % scales.shape[0]:
        raise ValueError(f"scales must be [K // G, N] with G dividing K={k}, N={n}; got {scales.shape}")
    if zeros.shape != scales.shape:
        raise ValueError(f"zeros {zeros.shape} must have the shape of scales {scales.shape}")
    return k, n, k // scales.shape[0]


def unpack_int4(qweight: jax.Array) -> jax.Array:
    """[K // 8, *N] int32 -> [K, *N] int32 values 0..15 (input channel 8r + j from nibble j of row r). Trailing
    dims are kept (a model's [K // 8, H, Dh] weight unpacks without flattening its sharded output dims)."""
    rest = qweight.shape[1:]
    shifts = (jnp.arange(PACK, dtype=jnp.int32) * 4).reshape(1, PACK, *(1,) * len(rest))
    q = (qweight[:, None] >> shifts) & 0xF  # [K // 8, 8, *N]
    return q.reshape(qweight.shape[0] * PACK, *rest)


def dequantize_int4(qweight, scales, zeros, dtype=jnp.float32) -> jax.Array:
    """qweight [K // 8, *N], scales/zeros [K // G, *N] -> w [K, *N] in ``dtype`` (float32 math)."""
    q = unpack_int4(qweight)
    k, rest = q.shape[0], q.shape[1:]
    groups = scales.shape[0]
    q = q.reshape(groups, k // groups, *rest) - zeros.astype(jnp.int32)[:, None]
    w = q.astype(jnp.float32) * scales.astype(jnp.float32)[:, None]
    return w.reshape(k, *rest).astype(dtype)


def int4_matmul_reference(x: jax.Array, qweight, scales, zeros, out_dtype=None) -> jax.Array:
    """x [M, K] @ dequantize(W) [K, N] -> [M, N] in ``out_dtype`` (default x.dtype).

    W is dequantized to x.dtype (one [K, N] temporary) and the product accumulates in float32."""
    check_int4_operands(x, qweight, scales, zeros)
    w = dequantize_int4(qweight, scales, zeros, x.dtype)
    out = jnp.dot(x, w, preferred_element_type=jnp.float32)
    return out.astype(out_dtype or x.dtype)


def to_nk_layout(qweight: jax.Array) -> jax.Array:
    """qweight [K // 8, *N] int32 (values 0..15) -> wt [*N, K] int4 holding q - 8 (the "nk" layout)."""
    return jnp.moveaxis(unpack_int4(qweight) - 8, 0, -1).astype(jnp.int4)


def check_int4_nk_operands(x, wt, scales, zeros) -> tuple[int, int, int]:
    """(K, N, G) of a valid 2-D call in the nk layout; a ValueError naming the offending shape/dtype otherwise."""
    if wt.dtype != jnp.int4 or wt.ndim != 2:
        raise ValueError(f"wt must be int4 [N, K] (the nk layout), got {wt.dtype} {wt.shape}")
    n, k = wt.shape
    if x.shape[-1] != k:
        raise ValueError(f"x has {x.shape[-1]} input features but wt has {k} ([{n}, {k}])")
    return _check_groups(k, n, scales, zeros)


def dequantize_int4_nk(wt, scales, zeros, dtype=jnp.float32) -> jax.Array:
    """wt [*N, K] (q - 8), scales/zeros [K // G, *N] -> w^T [*N, K] in ``dtype`` (float32 math)."""
    k, groups = wt.shape[-1], scales.shape[0]
    q = wt.astype(jnp.int32).reshape(*wt.shape[:-1], groups, k // groups) + 8
    z = jnp.moveaxis(zeros.astype(jnp.int32), 0, -1)[..., None]
    s = jnp.moveaxis(scales.astype(jnp.float32), 0, -1)[..., None]
    return ((q - z).astype(jnp.float32) * s).reshape(wt.shape).astype(dtype)


def int4_matmul_reference_nk(x: jax.Array, wt, scales, zeros, out_dtype=None) -> jax.Array:
    """x [M, K] @ W -> [M, N] for W in the nk layout: dequantized to x.dtype as [N, K], one dot contracting both
    operands' K (cuBLAS takes the transposed operand as is); float32 accumulation."""
    check_int4_nk_operands(x, wt, scales, zeros)
    w = dequantize_int4_nk(wt, scales, zeros, x.dtype)
    out = jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    return out.astype(out_dtype or x.dtype)
