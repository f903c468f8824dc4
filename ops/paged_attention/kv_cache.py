"""Paged KV cache allocation and the scatter of new K/V into it.

Layout per layer: ``kv_cache[2, NB, BS, K, D]`` (NB blocks of BS token slots, K kv heads, D head dim).
A token at slot ``s`` lives at ``kv_cache[:, s // BS, s % BS]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
    return (2, num_blocks, block_size, num_kv_heads, head_dim)


def allocate_kv_cache(num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                      dtype=jnp.bfloat16, sharding=None) -> list[jax.Array]:
    """Allocate one zeroed cache array per layer directly on device (with ``sharding`` if given)."""
    shape = kv_cache_shape(num_blocks, block_size, num_kv_heads, head_dim)
    make = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)
    return [make() for _ in range(num_layers)]


def write_kv_cache(kv_cache: jax.Array, k: jax.Array, v: jax.Array, slot_mapping: jax.Array) -> jax.Array:
    """Scatter new keys/values into their slots.

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
    num_slots = nb * bs
    pad_rows = 2 * num_slots + jnp.arange(num_tokens, dtype=jnp.int32)  # distinct, out of range
    slots = slot_mapping.astype(jnp.int32)
    rows = jnp.concatenate([jnp.where(slots < 0, pad_rows, slots),
                            jnp.where(slots < 0, pad_rows + num_tokens, slots + num_slots)])
    updates = jnp.concatenate([k, v]).astype(kv_cache.dtype).reshape(2 * num_tokens, nk * d)
    flat = kv_cache.reshape(2 * num_slots, nk * d)
    flat = flat.at[rows].set(updates, mode="drop", unique_indices=True)
    return flat.reshape(kv_cache.shape)
