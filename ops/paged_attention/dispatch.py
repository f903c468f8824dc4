"""Picks the implementation of ragged paged attention for the current platform.

Implementations (all take the reference's arguments; see reference.py for shapes and semantics):

* ``"reference"``: pure jnp, any platform. Gathers [T, ctx, K, D]: tests and short batches.
* ``"chunked"``: pure jnp, any platform, memory O(chunk): the default off the GPU.
* ``"pallas_triton"``: the Pallas kernel lowered through Triton (pallas_attention.py), NVIDIA sm_80+.
* ``"pallas_mosaic"``: the same decode launch, the prefill launch through the Mosaic GPU kernel (mosaic_prefill.py,
  Hopper only; calls it does not cover, e.g. a float8 cache or a sliding window, stay on the Triton prefill;
  soft-capped scores are covered; calls with attention sinks keep every prefill on Triton).

The ``impl`` argument (``LLM(attention_backend=...)``) forces one, by name or as an ``AttentionConfig`` (a name
and the Pallas kernels' tuning: decode split-K count, float8 dot operands). Otherwise, on an NVIDIA GPU of compute
capability >= 8.0 when the shapes are supported (head_dim a multiple of 8 in [16, 256]; a float8_e4m3 cache needs >= 8.9,
the first GPUs with e4m3 conversions): ``pallas_mosaic`` on Hopper (sm_90) when the Mosaic GPU prefill covers the
shapes (mosaic_prefill.supported), else ``pallas_triton``; ``chunked`` off the GPU.

Why Mosaic for long prefills on Hopper: 475 TFLOP/s against the Triton prefill's 312 at 1 x 8k, and 1.03-1.04x
the Triton path's wall clock on 16 x 8k-token prompts through the engine in three same-machine pairs
(docs/kernels.md).
Decode and short prefills run the same Triton kernels under both.

A float8 ``kv_cache`` (see kv_cache.py) is read by every implementation; ``k_scale`` / ``v_scale`` are its
per-layer scales (1.0 when not given).
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from ..device_info import gpu_compute_capability
from . import mosaic_prefill
from .chunked import ragged_paged_attention_chunked
from .pallas_attention import ragged_paged_attention_pallas
from .reference import ragged_paged_attention_reference

IMPLEMENTATIONS = {
    "reference": ragged_paged_attention_reference,
    "chunked": ragged_paged_attention_chunked,
    "pallas_triton": ragged_paged_attention_pallas,
    "pallas_mosaic": functools.partial(ragged_paged_attention_pallas, prefill_impl="mosaic"),
}


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """An implementation (None: ``default_impl``) and the tuning of the Pallas kernels (``pallas_triton`` /
    ``pallas_mosaic``; the jnp implementations have none): ``decode_splits`` forces the decode launch's split-K
    count, ``fp8_dot`` (pallas_attention.FP8_DOTS) how a float8 cache's tiles feed the dots. Hashable: a static
    argument of the jitted step."""

    impl: str | None = None
    decode_splits: int | None = None
    fp8_dot: str = "auto"


def _supported_by_pallas(q, kv_cache, cc) -> bool:
    if kv_cache is not None and kv_cache.dtype == jnp.float8_e4m3fn and cc < (8, 9):
        return False  # Triton converts e4m3 only on sm_89+ (Ada, Hopper)
    if q is None:
        return True
    head_dim = q.shape[-1]
    return 16 <= head_dim <= 256 and head_dim % 8 == 0  # padded to a power of two inside the kernel


def default_impl(q=None, kv_cache=None) -> str:
    """The implementation used when none is forced (``q`` and ``kv_cache`` let it check support)."""
    cc = gpu_compute_capability()
    if cc is None or cc < (8, 0) or not _supported_by_pallas(q, kv_cache, cc):
        return "chunked"
    if cc[0] == 9 and (q is None or mosaic_prefill.supported(q, kv_cache)):
        return "pallas_mosaic"
    return "pallas_triton"


def prefill_split(impl: str | None = None, q=None, kv_cache=None, sliding_window: int | None = None,
                  soft_cap: float | None = None, sinks: bool = False) -> tuple[str, str, int] | None:
    """(implementation for other steps, implementation for steps with a long prefill, the length that makes a
    prefill long) when the chosen implementation (``impl``, else ``default_impl(q, kv_cache)``) is
    ``pallas_mosaic`` and the Mosaic GPU prefill covers ``q`` / ``kv_cache`` (shapes and dtypes, e.g.
    ShapeDtypeStructs: the model's), ``sliding_window`` and ``soft_cap``; else None. The model runner compiles the long-prefill
    programs of the buckets that can hold one separately, so steps without a long prefill never pay the Mosaic
    path's gathers and idle launch. ``sinks`` (attention sinks, gpt-oss): None, as the Mosaic prefill has none."""
    name = impl or default_impl(q, kv_cache)
    if name != "pallas_mosaic" or sinks:
        return None
    if q is not None and not mosaic_prefill.supported(q, kv_cache, sliding_window, soft_cap):
        return None  # every call would fall back to the Triton prefill: no programs of its own
    return "pallas_triton", "pallas_mosaic", mosaic_prefill.MIN_Q_LEN


def ragged_paged_attention(q, kv_cache, query_start_loc, seq_lens, block_tables, *, sm_scale,
                           sliding_window=None, soft_cap=None, k_scale=None, v_scale=None,
                           impl: str | AttentionConfig | None = None, sinks=None):
    """Ragged paged attention (see reference.py for shapes and semantics). Outputs of padding tokens
    (after query_start_loc[-1]) are unspecified for the GPU kernels. ``impl``: a name of IMPLEMENTATIONS, an
    AttentionConfig, or None (``default_impl``). ``sinks``: [Hq] attention-sink logits (gpt-oss) or None; every
    implementation takes them (the Pallas ones in their Triton launches)."""
    config = impl if isinstance(impl, AttentionConfig) else AttentionConfig(impl)
    name = config.impl or default_impl(q, kv_cache)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention impl {name!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    tuning = {}
    if name.startswith("pallas_"):
        tuning = {"decode_splits": config.decode_splits, "fp8_dot": config.fp8_dot}
    return IMPLEMENTATIONS[name](q, kv_cache, query_start_loc, seq_lens, block_tables, sm_scale=sm_scale,
                                 sliding_window=sliding_window, soft_cap=soft_cap, k_scale=k_scale,
                                 v_scale=v_scale, sinks=sinks, **tuning)
