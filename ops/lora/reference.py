"""Pure-jnp reference of the batched LoRA product: each token gathers its own adapter's matrices.

Shapes: T tokens, I input features, O output features, S adapter slots (slot 0 = no adapter, all zeros),
R rank (the slots' common, zero-padded rank).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lora_delta_reference(x: jax.Array, a: jax.Array, b: jax.Array, slots: jax.Array) -> jax.Array:
    """x [T, I], a [I, S, R], b [S, R, O] (scale folded in), slots [T] int32 -> x_t @ a[:, s_t] @ b[s_t]: [T, O].

    Materialises [I, T, R] and [T, R, O]: the oracle for tests, not a fast path."""
    shrunk = jnp.einsum("ti,itr->tr", x, a[:, slots], preferred_element_type=jnp.float32)
    out = jnp.einsum("tr,tro->to", shrunk.astype(b.dtype), b[slots], preferred_element_type=jnp.float32)
    return out.astype(x.dtype)
