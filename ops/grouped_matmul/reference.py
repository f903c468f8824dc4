"""Pure-jnp grouped matmuls: the oracles for the ragged_dot path (tests, any platform).

A grouped matmul multiplies row blocks of ``lhs`` [M, K] by their own weight: rows are sorted by group, group g
owning the ``group_sizes[g]`` rows after those of groups < g, and ``out[m] = lhs[m] @ rhs[g(m)]`` with rhs
[G, K, N]. Rows past ``sum(group_sizes)`` belong to no group and give zeros (static shapes: M is an upper bound).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .layout import count_at_or_below, exclusive_prefix


def check_grouped_operands(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array) -> None:
    """Shapes: lhs [M, K], rhs [G, K, N], group_sizes [G] integer (a ValueError naming the mismatch)."""
    if lhs.ndim != 2 or rhs.ndim != 3:
        raise ValueError(f"grouped matmul needs lhs [M, K] and rhs [G, K, N], got {lhs.shape} and {rhs.shape}")
    if lhs.shape[1] != rhs.shape[1]:
        raise ValueError(f"grouped matmul: lhs K={lhs.shape[1]} != rhs K={rhs.shape[1]}")
    if group_sizes.shape != (rhs.shape[0],) or not jnp.issubdtype(group_sizes.dtype, jnp.integer):
        raise ValueError(f"group_sizes must be an integer array of shape ({rhs.shape[0]},), got "
                         f"{group_sizes.dtype}{group_sizes.shape}")


def row_groups(group_sizes: jax.Array, num_rows: int) -> jax.Array:
    """[M] int32 group of each row; G (no group) for rows past the last group."""
    sizes = group_sizes.astype(jnp.int32)
    return count_at_or_below(exclusive_prefix(sizes) + sizes, num_rows)


def grouped_matmul_reference(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array,
                             preferred_element_type=None) -> jax.Array:
    """Loop over groups: each group's product over all rows, kept on that group's rows. [M, N]."""
    check_grouped_operands(lhs, rhs, group_sizes)
    out_dtype = preferred_element_type or lhs.dtype
    groups = row_groups(group_sizes, lhs.shape[0])
    out = jnp.zeros((lhs.shape[0], rhs.shape[2]), jnp.float32)
    for g in range(rhs.shape[0]):
        prod = jnp.dot(lhs, rhs[g], preferred_element_type=jnp.float32)
        out = jnp.where((groups == g)[:, None], prod, out)
    return out.astype(out_dtype)


def grouped_matmul_dense(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array,
                         preferred_element_type=None) -> jax.Array:
    """Every row against every group's weight ([M, G, N]), then each row's own group picked: a second oracle
    that shares no code with the loop (G times the FLOPs; tests only)."""
    check_grouped_operands(lhs, rhs, group_sizes)
    out_dtype = preferred_element_type or lhs.dtype
    groups = row_groups(group_sizes, lhs.shape[0])
    every = jnp.einsum("mk,gkn->mgn", lhs, rhs, preferred_element_type=jnp.float32)
    padded = jnp.concatenate([every, jnp.zeros_like(every[:, :1])], axis=1)  # group G: zeros
    return jnp.take_along_axis(padded, groups[:, None, None], axis=1)[:, 0].astype(out_dtype)
