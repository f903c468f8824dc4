"""Picks the implementation of ragged paged attention for the current platform.

Implementations (all take the reference's arguments; see reference.py for shapes and semantics):

* ``"reference"``: pure jnp, any platform. Gathers [T, ctx, K, D]: tests and short batches.
* ``"chunked"``: pure jnp, any platform, memory O(chunk): the default off the GPU.
* ``"pallas_triton"``: the Pallas kernel lowered through Triton (pallas_attention.py), NVIDIA sm_80+.
* ``"pallas_mosaic"``: the same decode launch, the prefill launch through the Mosaic GPU kernel (mosaic_prefill.py,
  Hopper only; calls it does not cover, e.g. a float8 cache or a sliding window, stay on the Triton prefill).

``JAXLLM_ATTENTION_IMPL`` (or the ``impl`` argument, which wins) forces one. Otherwise: ``pallas_triton`` on an
NVIDIA GPU of compute capability >= 8.0 when the shapes are supported (head_dim a power of two >= 16; a
float8_e4m3 cache needs >= 8.9, the first GPUs with e4m3 conversions), else ``chunked``.

A float8 ``kv_cache`` (see kv_cache.py) is read by every implementation; ``k_scale`` / ``v_scale`` are its
per-layer scales (1.0 when not given).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from ..device_info import forced_implementation, gpu_compute_capability
from .chunked import ragged_paged_attention_chunked
from .mosaic_prefill import MIN_Q_LEN as MOSAIC_MIN_Q_LEN
from .pallas_attention import ragged_paged_attention_pallas
from .reference import ragged_paged_attention_reference

IMPLEMENTATIONS = {
    "reference": ragged_paged_attention_reference,
    "chunked": ragged_paged_attention_chunked,
    "pallas_triton": ragged_paged_attention_pallas,
    "pallas_mosaic": functools.partial(ragged_paged_attention_pallas, prefill_impl="mosaic"),
}


def _supported_by_pallas(q, kv_cache, cc) -> bool:
    if kv_cache is not None and kv_cache.dtype == jnp.float8_e4m3fn and cc < (8, 9):
        return False  # Triton converts e4m3 only on sm_89+ (Ada, Hopper)
    if q is None:
        return True
    head_dim = q.shape[-1]
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


def default_impl(q=None, kv_cache=None) -> str:
    """The implementation used when none is forced (``q`` and ``kv_cache`` let it check support)."""
    forced = forced_implementation("JAXLLM_ATTENTION_IMPL", IMPLEMENTATIONS)
    if forced:
        return forced
    cc = gpu_compute_capability()
    if cc is not None and cc >= (8, 0) and _supported_by_pallas(q, kv_cache, cc):
        return "pallas_triton"
    return "chunked"


def prefill_split(impl: str | None = None) -> tuple[str, str, int] | None:
    """(implementation for other steps, implementation for steps with a long prefill, the length that makes a
    prefill long) when the chosen implementation (``impl``, else ``JAXLLM_ATTENTION_IMPL``) is ``pallas_mosaic``;
    else None. The model runner compiles the long-prefill programs of the buckets that can hold one separately,
    so steps without a long prefill never pay the Mosaic path's gathers and idle launch."""
    name = impl or forced_implementation("JAXLLM_ATTENTION_IMPL", IMPLEMENTATIONS)
    if name != "pallas_mosaic":
        return None
    return "pallas_triton", "pallas_mosaic", MOSAIC_MIN_Q_LEN


def ragged_paged_attention(q, kv_cache, query_start_loc, seq_lens, block_tables, *, sm_scale,
                           sliding_window=None, soft_cap=None, k_scale=None, v_scale=None,
                           impl: str | None = None):
    """Ragged paged attention (see reference.py for shapes and semantics). Outputs of padding tokens
    (after query_start_loc[-1]) are unspecified for the GPU kernels."""
    name = impl or default_impl(q, kv_cache)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention impl {name!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[name](q, kv_cache, query_start_loc, seq_lens, block_tables, sm_scale=sm_scale,
                                 sliding_window=sliding_window, soft_cap=soft_cap, k_scale=k_scale,
                                 v_scale=v_scale)
