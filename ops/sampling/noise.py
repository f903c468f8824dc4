"""The sampler's keyed Gumbel noise, shared by the XLA sampler and the Pallas fallback kernel (same bits in both).

The noise of token v in a row is a keyed hash of (row key, v): two rounds of a 32-bit mixer, 24 bits -> uniform
in (0, 1) -> -log(-log(u)). The row key is threefry's ``fold_in(key(seed), output_index)``, so a seeded request
draws the same noise whatever else is in the batch and wherever its row is. Elementwise, so it fuses with the
consumer (an argmax or a block max): ~1 pass over [S, V] where vmapped ``jax.random.gumbel`` costs ~2x on GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

U_MAX = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # largest f32 below 1: 1 - 2^-24


def mix32(h: jax.Array) -> jax.Array:
    """A bijective 32-bit integer mixer with full avalanche ("lowbias32", C. Wellons). h: uint32."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
    h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def row_keys(seeds: jax.Array, output_index: jax.Array) -> jax.Array:
    """seeds [S, 2] u32, output_index [S] -> row keys [S, 2] u32 (S tiny threefry calls)."""
    return jax.vmap(
        lambda seed, index: jax.random.key_data(
            jax.random.fold_in(jax.random.wrap_key_data(seed, impl="threefry2x32"), index)
        )
    )(seeds, output_index)


def gumbel(ids: jax.Array, key0: jax.Array, key1: jax.Array) -> jax.Array:
    """Gumbel noise f32 of token ids (uint32, any shape) under a row key (key0, key1: uint32 broadcastable to
    ids). u is capped at the largest float32 below 1 ((2^24 - 0.5) / 2^24 rounds to 1.0), so the noise is
    always finite and a masked -inf logit stays -inf."""
    h = mix32(mix32(ids ^ key0) ^ key1)
    bits = (h >> 8).astype(jnp.int32)  # < 2^24: a signed conversion (the kernel's Triton lowering likes it)
    u = jnp.minimum((bits.astype(jnp.float32) + 0.5) * (1.0 / (1 << 24)), U_MAX)
    return -jnp.log(-jnp.log(u))
