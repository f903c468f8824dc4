"""The grouped matmul the MoE layers call, and its implementations.

* ``"pallas_triton"``: our Pallas -> Triton kernel (pallas_triton.py), the default on NVIDIA GPUs (sm_80+) for
  shapes its tiles divide. Forced off the GPU it runs in Pallas' interpret mode (tests).
* ``"ragged_dot"``: ``jax.lax.ragged_dot`` (XLA's grouped GEMM op), the default elsewhere and the GPU fallback.
  Its cost depends on XLA's lowering: on the CPU a loop over groups; on NVIDIA GPUs, jaxlib 0.10's default
  rewrites it into a dense dot over zero-padded groups (G times the FLOPs); the cuDNN grouped GEMM lowering is
  behind ``--xla_gpu_experimental_use_ragged_dot_fusion=true`` (XLA_FLAGS). See NOTES.md.
* ``"reference"``: the per-group loop of reference.py (tests).

``LLM(moe_matmul_impl=...)`` (or JAXLLM_MOE_MATMUL_IMPL) forces one for every MoE layer.

Operands: lhs [M, K] rows sorted by group, rhs [G, K, N] (its dtype may be narrower than lhs': fp8 / int8
weights are converted to lhs.dtype), group_sizes [G] int32 -> [M, N] (rows past the groups' total are zeros).
"""

from __future__ import annotations

import jax

from ..device_info import gpu_compute_capability
from .pallas_triton import grouped_matmul_pallas, plan
from .reference import check_grouped_operands, grouped_matmul_reference


def grouped_matmul_ragged_dot(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array,
                              preferred_element_type=None) -> jax.Array:
    check_grouped_operands(lhs, rhs, group_sizes)
    return jax.lax.ragged_dot(lhs, rhs.astype(lhs.dtype), group_sizes.astype("int32"),
                              preferred_element_type=preferred_element_type or lhs.dtype)


def _pallas(lhs, rhs, group_sizes, preferred_element_type=None):
    """The Triton kernel on an NVIDIA GPU, its interpret mode elsewhere (forced impl in tests)."""
    return grouped_matmul_pallas(lhs, rhs, group_sizes, preferred_element_type,
                                 interpret=gpu_compute_capability() is None)


IMPLEMENTATIONS = {"pallas_triton": _pallas, "ragged_dot": grouped_matmul_ragged_dot,
                   "reference": grouped_matmul_reference}


def default_impl(lhs: jax.Array, rhs: jax.Array) -> str:
    """"pallas_triton" on NVIDIA sm_80+ when its tiles fit the shape, else "ragged_dot"."""
    cc = gpu_compute_capability()
    if cc is not None and cc >= (8, 0) and plan(lhs.shape[0], lhs.shape[1], rhs.shape[2], rhs.shape[0]):
        return "pallas_triton"
    return "ragged_dot"


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, impl: str | None = None,
                   preferred_element_type=None) -> jax.Array:
    """out[m] = lhs[m] @ rhs[group of row m]; ``impl`` one of IMPLEMENTATIONS (None: ``default_impl``)."""
    impl = impl or default_impl(lhs, rhs)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"grouped matmul impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](lhs, rhs, group_sizes, preferred_element_type)
