"""The grouped matmul the MoE layers call, and its implementations.

* ``"ragged_dot"``: ``jax.lax.ragged_dot`` (XLA's grouped GEMM op), the default on every platform. Its cost
  depends on XLA's lowering: on the CPU a loop over groups; on NVIDIA GPUs, jaxlib 0.10's default rewrites it
  into a dense dot over zero-padded groups (G times the FLOPs), and the cuDNN grouped GEMM lowering is behind
  ``--xla_gpu_experimental_use_ragged_dot_fusion=true`` (XLA_FLAGS) - see ops/grouped_matmul/NOTES.md.
* ``"reference"``: the per-group loop of reference.py (tests).

Operands: lhs [M, K] rows sorted by group, rhs [G, K, N], group_sizes [G] int32 -> [M, N] (rows past the
groups' total are zeros).
"""

from __future__ import annotations

import jax

from .reference import check_grouped_operands, grouped_matmul_reference


def grouped_matmul_ragged_dot(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array,
                              preferred_element_type=None) -> jax.Array:
    check_grouped_operands(lhs, rhs, group_sizes)
    return jax.lax.ragged_dot(lhs, rhs, group_sizes.astype("int32"),
                              preferred_element_type=preferred_element_type or lhs.dtype)


IMPLEMENTATIONS = {"ragged_dot": grouped_matmul_ragged_dot, "reference": grouped_matmul_reference}
DEFAULT_IMPL = "ragged_dot"


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, impl: str | None = None,
                   preferred_element_type=None) -> jax.Array:
    """out[m] = lhs[m] @ rhs[group of row m]; ``impl`` one of IMPLEMENTATIONS (None: ``DEFAULT_IMPL``)."""
    impl = impl or DEFAULT_IMPL
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"grouped matmul impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](lhs, rhs, group_sizes, preferred_element_type)
