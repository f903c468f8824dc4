"""Picks the implementation of ragged paged attention for the current platform.

``JAXLLM_ATTENTION_IMPL`` (or the ``impl`` argument) forces one: "reference" (pure jnp, any platform).
GPU implementations register themselves here as they are added.
"""

from __future__ import annotations

import os



from .reference import ragged_paged_attention_reference

IMPLEMENTATIONS = {"reference": ragged_paged_attention_reference}


def default_impl() -> str:
    forced = os.environ.get("JAXLLM_ATTENTION_IMPL")
    if forced:
        if forced not in IMPLEMENTATIONS:
            raise ValueError(f"JAXLLM_ATTENTION_IMPL={forced!r}; available: {sorted(IMPLEMENTATIONS)}")
        return forced
    return "reference"


def ragged_paged_attention(q, kv_cache, query_start_loc, seq_lens, block_tables, *, sm_scale,
                           sliding_window=None, soft_cap=None, impl: str | None = None):
    """Ragged paged attention (see reference.py for shapes and semantics)."""
    name = impl or default_impl()
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention impl {name!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[name](q, kv_cache, query_start_loc, seq_lens, block_tables, sm_scale=sm_scale,
                                 sliding_window=sliding_window, soft_cap=soft_cap)
