"""Paged KV cache allocation, the scatter of new K/V into it, and its optional float8 storage.

Layout per layer: ``kv_cache[2, NB, BS, K, D]`` (NB blocks of BS token slots, K kv heads, D head dim).
A token at slot ``s`` lives at ``kv_cache[:, s // BS, s % BS]``.

fp8 cache (vLLM's ``kv_cache_dtype="fp8"``): the cache array itself is float8 (e4m3fn, or e5m2), so every
consumer infers the mode from ``kv_cache.dtype``. Each layer has scalar float32 scales ``k_scale`` and
``v_scale`` (1.0 when the checkpoint has no calibrated ones, as in vLLM): writing stores
``clip(x / scale, -fp8_max, fp8_max)`` cast to fp8, reading uses ``fp8_value * scale``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# vLLM's kv_cache_dtype names -> storage dtype ("auto" = the model's dtype). "fp8" is e4m3 (max 448).
FP8_KV_CACHE_DTYPES = {
    "fp8": jnp.float8_e4m3fn,
    "fp8_e4m3": jnp.float8_e4m3fn,
    "fp8_e5m2": jnp.float8_e5m2,
}
KV_CACHE_DTYPES = ("auto", *FP8_KV_CACHE_DTYPES)


def resolve_kv_cache_dtype(kv_cache_dtype: str, model_dtype) -> jnp.dtype:
    """vLLM's ``kv_cache_dtype`` string -> the dtype the cache is stored in ("auto": ``model_dtype``)."""
    if kv_cache_dtype == "auto":
        return jnp.dtype(model_dtype)
    if kv_cache_dtype not in FP8_KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} is not supported; choose one of {KV_CACHE_DTYPES}")
    return jnp.dtype(FP8_KV_CACHE_DTYPES[kv_cache_dtype])


def is_fp8(dtype) -> bool:
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.float8_e5m2))


def kv_scales(kv_cache: jax.Array, k_scale=None, v_scale=None) -> jax.Array | None:
    """[2] float32 (k_scale, v_scale) for an fp8 cache (a missing scale is 1.0), None for any other cache.

    Scales are Python numbers or float32 scalars (traced is fine). Passing a scale with a non-fp8 cache is
    an error rather than silently ignored."""
    if not is_fp8(kv_cache.dtype):
        if k_scale is not None or v_scale is not None:
            raise ValueError(f"k_scale={k_scale!r} / v_scale={v_scale!r} given, but the KV cache is "
                             f"{kv_cache.dtype}: scales apply only to a float8 cache")
        return None
    out = []
    for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
        if s is None:
            s = 1.0
        if isinstance(s, (int, float)) and not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name}={s!r} must be a finite number > 0")
        s = jnp.asarray(s, jnp.float32)
        if s.shape != ():
            raise ValueError(f"{name} must be a scalar, got shape {s.shape}")
        out.append(s)
    return jnp.stack(out)


def quantize_fp8(x: jax.Array, scale, dtype) -> jax.Array:
    """x / scale clipped to the fp8 range (e4m3: +-448; XLA would turn out-of-range values into NaN / inf),
    rounded to nearest ``dtype``. NaN stays NaN."""
    fmax = float(jnp.finfo(dtype).max)
    return jnp.clip(x.astype(jnp.float32) / scale, -fmax, fmax).astype(dtype)


def dequantize_fp8(x: jax.Array, scale, dtype=jnp.float32) -> jax.Array:
    """fp8 values * scale, in ``dtype``."""
    return (x.astype(jnp.float32) * scale).astype(dtype)


def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
    return (2, num_blocks, block_size, num_kv_heads, head_dim)


def allocate_kv_cache(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                      dtype=jnp.bfloat16, sharding=None) -> list[jax.Array]:
    """Allocate one zeroed cache array per layer directly on device (with ``sharding`` if given).

    ``dtype``: the storage dtype, e.g. ``resolve_kv_cache_dtype("fp8", model_dtype)`` for an fp8 cache."""
    shape = kv_cache_shape(num_blocks, block_size, num_kv_heads, head_dim)
    make = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)
    return [make() for _ in range(num_layers)]


def write_kv_cache(kv_cache: jax.Array, k: jax.Array, v: jax.Array, slot_mapping: jax.Array, *,
                   k_scale=None, v_scale=None) -> jax.Array:
    """Scatter new keys/values into their slots (quantized with k_scale / v_scale if the cache is fp8).

    kv_cache: [2, NB, BS, K, D]; k, v: [T, K, D]; slot_mapping: [T] int32, a negative slot marks a padding
    token that is not written. Under jit with the cache donated, XLA updates the buffer in place (no copy).

    One row scatter of 2T contiguous [K * D] rows into the cache viewed as [2 * NB * BS, K * D]. Every index is
    distinct (padding tokens get distinct out-of-range rows, which are dropped), so ``unique_indices`` lets XLA
    write without atomics or serialization."""
    _, nb, bs, nk, d = kv_cache.shape
    num_tokens = k.shape[0]
    if k.shape != (num_tokens, nk, d) or v.shape != k.shape or slot_mapping.shape != (num_tokens,):
        raise ValueError(f"k {k.shape}, v {v.shape}, slot_mapping {slot_mapping.shape} do not match "
                         f"kv_cache {kv_cache.shape}")
    scales = kv_scales(kv_cache, k_scale, v_scale)
    if scales is not None:
        k = quantize_fp8(k, scales[0], kv_cache.dtype)
        v = quantize_fp8(v, scales[1], kv_cache.dtype)
    num_slots = nb * bs
    pad_rows = 2 * num_slots + jnp.arange(num_tokens, dtype=jnp.int32)  # distinct, out of range
    slots = slot_mapping.astype(jnp.int32)
    rows = jnp.concatenate([jnp.where(slots < 0, pad_rows, slots),
                            jnp.where(slots < 0, pad_rows + num_tokens, slots + num_slots)])
    updates = jnp.concatenate([k, v]).astype(kv_cache.dtype).reshape(2 * num_tokens, nk * d)
    flat = kv_cache.reshape(2 * num_slots, nk * d)
    flat = flat.at[rows].set(updates, mode="drop", unique_indices=True)
    return flat.reshape(kv_cache.shape)
