"""The grouped matmul the MoE layers call, and its implementations.

* ``"pallas_triton"``: our Pallas -> Triton kernel (pallas_triton.py), the default on NVIDIA GPUs (sm_80+) for
  shapes its tiles divide. Forced off the GPU it runs in Pallas' interpret mode (tests).
* ``"ragged_dot"``: ``jax.lax.ragged_dot`` (XLA's grouped GEMM op), the default elsewhere and the GPU fallback.
  Its cost depends on XLA's lowering: on the CPU a loop over groups; on NVIDIA GPUs, jaxlib 0.10's default
  rewrites it into a dense dot over zero-padded groups (G times the FLOPs); the cuDNN grouped GEMM lowering is
  behind ``--xla_gpu_experimental_use_ragged_dot_fusion=true`` (XLA_FLAGS). See NOTES.md.
* ``"reference"``: the per-group loop of reference.py (tests).

``LLM(moe_matmul_impl=...)`` (or JAXLLM_MOE_MATMUL_IMPL) forces one for every MoE layer.

A MoE layer calls ``layout_plan`` and ``grouped_matmul_slotted``: its rows stay in one ``GroupedLayout`` slot
order (layout.py) through both grouped matmuls, so the tile map is built once per layer and nothing is padded or
gathered between them.

Operands: lhs [M, K] rows sorted by group, rhs [G, K, N] (its dtype may be narrower than lhs': fp8 / int8
weights are converted to lhs.dtype), group_sizes [G] int32 -> [M, N] (rows past the groups' total are zeros).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..device_info import gpu_compute_capability
from .layout import GroupedLayout
from .pallas_triton import grouped_matmul_pallas, grouped_matmul_tiles, plan
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
    return layout_plan(lhs.shape[0], rhs.shape[0], [(lhs.shape[1], rhs.shape[2])], None)[0]


def layout_plan(num_rows: int, num_groups: int, shapes, impl: str | None) -> tuple[str, int]:
    """(impl, block_m) of grouped matmuls of ``num_rows`` rows in ``num_groups`` groups sharing one
    ``GroupedLayout``, one per (K, N) of ``shapes``. impl None: "pallas_triton" on NVIDIA sm_80+ when its tiles
    fit every shape, else "ragged_dot". block_m: the kernel's row tile, 1 (the contiguous order) for the others."""
    if impl is not None and impl not in IMPLEMENTATIONS:
        raise ValueError(f"grouped matmul impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    plans = [plan(num_rows, k, n, num_groups) for k, n in shapes]
    if impl is None:
        cc = gpu_compute_capability()
        impl = "pallas_triton" if cc is not None and cc >= (8, 0) and all(plans) else "ragged_dot"
    if impl != "pallas_triton":
        return impl, 1
    if not all(plans):
        raise ValueError(f"no grouped-matmul tiling for (K, N) in {list(shapes)}")
    return impl, plans[0].block_m


def grouped_matmul_slotted(lhs: jax.Array, rhs: jax.Array, layout: GroupedLayout, *, impl: str,
                           scale: jax.Array | None = None, swiglu: bool = False, out_dtype=None,
                           bias: jax.Array | None = None, clamp: tuple[float, float] | None = None) -> jax.Array:
    """lhs [S, K] in ``layout``'s slot order (S = layout.num_slots), rhs [G, K, N], scale None or [G, N] (the
    experts' per-channel scales), bias None or [G, N] -> [S, N] out_dtype (default lhs.dtype): slot s of group g
    gets ``p = (lhs[s] @ rhs[g]) * scale[g] + bias[g]``; ``swiglu`` (rhs columns: gate, then up): [S, N/2]
    ``silu(p[:N/2]) * p[N/2:]``, or with ``clamp`` (alpha, limit: gpt-oss) ``(clip(up, -limit, limit) + 1) *
    g * sigmoid(alpha * g)``, g = min(gate, limit); computed in float32 and rounded once. Padding slots get any
    value. ``impl`` from ``layout_plan``."""
    out_dtype = jnp.dtype(out_dtype or lhs.dtype)
    if impl == "pallas_triton":
        return grouped_matmul_tiles(lhs, rhs, layout, out_dtype, scale=scale, swiglu=swiglu, bias=bias,
                                    clamp=clamp, interpret=gpu_compute_capability() is None)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"grouped matmul impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    if scale is None and bias is None and not swiglu:
        return IMPLEMENTATIONS[impl](lhs, rhs, layout.padded_sizes, out_dtype)
    out = IMPLEMENTATIONS[impl](lhs, rhs, layout.padded_sizes, jnp.float32)
    group = jnp.maximum(layout.slot_group(), 0)
    if scale is not None:
        out = out * jnp.take(scale, group, axis=0)
    if bias is not None:
        out = out + jnp.take(bias, group, axis=0).astype(jnp.float32)
    if swiglu:
        gate, up = jnp.split(out, 2, axis=1)
        out = jax.nn.silu(gate) * up if clamp is None else swiglu_clamped(gate, up, *clamp)
    return out.astype(out_dtype)


def swiglu_clamped(gate: jax.Array, up: jax.Array, alpha: float, limit: float) -> jax.Array:
    """gpt-oss's activation: (clip(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit)."""
    gate = jnp.minimum(gate, limit)
    return (jnp.clip(up, -limit, limit) + 1.0) * gate * jax.nn.sigmoid(alpha * gate)


def grouped_matmul(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, *, impl: str | None = None,
                   preferred_element_type=None) -> jax.Array:
    """out[m] = lhs[m] @ rhs[group of row m]; ``impl`` one of IMPLEMENTATIONS (None: ``default_impl``)."""
    impl = impl or default_impl(lhs, rhs)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"grouped matmul impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](lhs, rhs, group_sizes, preferred_element_type)
