"""Two fast forms of the batched LoRA product (x [T, I], a [I, S, R], b [S, R, O], slots [T] -> [T, O]).

- ``lora_delta_onehot``: every token is multiplied by every slot's A ([T, S*R], one dense matmul), the columns
  of the other slots are zeroed by a one-hot mask, and one dense matmul with all slots' B ([S*R, O]) expands
  the result. It does S times the minimal shrink/expand work, but both are two plain GEMMs with a small inner
  size (S*R: 144 for 8 adapters of rank 16 plus slot 0), no gather and no sort, and under tensor parallelism
  they shard like the base projection.
- ``lora_delta_ragged``: tokens sorted by slot and ``jax.lax.ragged_dot`` (a grouped matmul) over the slots'
  contiguous segments, then unsorted: the minimal work plus two [T, I] / [T, O] permutations.

Both accumulate in float32 and cast the shrunk activations to the adapters' dtype before the expand (as the
base projection's activations are)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lora_delta_onehot(x: jax.Array, a: jax.Array, b: jax.Array, slots: jax.Array) -> jax.Array:
    num_slots = a.shape[1]
    shrunk = jnp.einsum("ti,isr->tsr", x, a, preferred_element_type=jnp.float32)
    mask = slots[:, None] == jnp.arange(num_slots, dtype=slots.dtype)[None, :]  # [T, S]
    shrunk = jnp.where(mask[:, :, None], shrunk, 0.0).astype(b.dtype)
    out = jnp.einsum("tsr,sro->to", shrunk, b, preferred_element_type=jnp.float32)
    return out.astype(x.dtype)


def lora_delta_ragged(x: jax.Array, a: jax.Array, b: jax.Array, slots: jax.Array) -> jax.Array:
    num_slots = a.shape[1]
    order = jnp.argsort(slots, stable=True)
    group_sizes = jnp.bincount(slots, length=num_slots).astype(jnp.int32)
    shrunk = jax.lax.ragged_dot(x[order], jnp.moveaxis(a, 1, 0), group_sizes, preferred_element_type=jnp.float32)
    out = jax.lax.ragged_dot(shrunk.astype(b.dtype), b, group_sizes, preferred_element_type=jnp.float32)
    inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return out[inverse].astype(x.dtype)
