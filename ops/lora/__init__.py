"""Batched LoRA: the low-rank update of many adapters in one ragged batch (``lora_delta``).

Each token t carries an adapter slot s_t; the op returns x_t @ A[s_t] @ B[s_t] for all tokens at once.
``impl``: "onehot" (default: two dense GEMMs over all slots, see batched.py), "ragged" (sort + ragged_dot)
or "reference" (per-token gather, the oracle)."""

from __future__ import annotations

import jax

from .batched import lora_delta_onehot, lora_delta_ragged
from .reference import lora_delta_reference

IMPLS = {"onehot": lora_delta_onehot, "ragged": lora_delta_ragged, "reference": lora_delta_reference}


def lora_delta(x: jax.Array, a: jax.Array, b: jax.Array, slots: jax.Array, impl: str = "onehot") -> jax.Array:
    """x [T, *in], a [*in, S, R], b [S, R, *out], slots [T] int32 -> [T, *out] in x's dtype.

    The input and output axes are flattened for the product (a sharded leading axis, as heads under tensor
    parallelism, stays sharded)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown LoRA implementation {impl!r}; choose one of {sorted(IMPLS)}")
    t = x.shape[0]
    out_dims = b.shape[2:]
    flat_x = x.reshape(t, -1)
    flat_a = a.reshape(-1, *a.shape[-2:])
    flat_b = b.reshape(b.shape[0], b.shape[1], -1)
    return IMPLS[impl](flat_x, flat_a, flat_b, slots).reshape(t, *out_dims)


__all__ = ["IMPLS", "lora_delta", "lora_delta_onehot", "lora_delta_ragged", "lora_delta_reference"]
