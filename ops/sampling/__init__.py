"""Exact truncated sampling (min_p / top-k / top-p, vLLM's order, ties kept) for the rows the sampler's fast path
cannot decide, and the keyed Gumbel noise the sampler uses.

* ``"pallas_triton"``: the per-row kernel (pallas_triton.py), the default on NVIDIA GPUs (sm_80+): a row not
  selected costs nothing and no step syncs with the host. Forced off the GPU it runs in interpret mode (tests).
* ``"reference"``: the bisection of reference.py for every row under a ``lax.cond`` on "any row selected": the
  default elsewhere (a CPU runs the cond without a host round trip).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..device_info import gpu_compute_capability
from .noise import gumbel, row_keys
from .pallas_triton import exact_rows_pallas
from .reference import (
    exact_rows_reference,
    first_argmax,
    threshold_bisect,
    threshold_sorted,
    truncated_gumbel_argmax,
)


def _pallas(x, rows, floor, top_k, top_p, temperature, keys, tokens):
    return exact_rows_pallas(x, rows, floor, top_k, top_p, temperature, keys, tokens,
                             interpret=gpu_compute_capability() is None)


def _reference(x, rows, floor, top_k, top_p, temperature, keys, tokens):
    exact = lambda: jnp.where(rows, exact_rows_reference(x, rows, floor, top_k, top_p, temperature, keys), tokens)
    return lax.cond(jnp.any(rows), exact, lambda: tokens)


IMPLEMENTATIONS = {"pallas_triton": _pallas, "reference": _reference}


def default_impl() -> str:
    cc = gpu_compute_capability()
    return "pallas_triton" if cc is not None and cc >= (8, 0) else "reference"


def exact_rows(x: jax.Array, rows: jax.Array, floor: jax.Array, top_k: jax.Array, top_p: jax.Array,
               temperature: jax.Array, keys: jax.Array, tokens: jax.Array, *, impl: str | None = None) -> jax.Array:
    """tokens [S] i32 with the rows where ``rows`` [S] is True replaced by an exact draw: min_p floor [S] f32,
    then top_k [S] i32 (V = off), then top_p [S] f32 (1 = off) on x [S, V] f32 processed logits, temperature
    [S], Gumbel-max keyed by keys [S, 2] u32. ``impl`` one of IMPLEMENTATIONS (None: ``default_impl()``)."""
    impl = impl or default_impl()
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"exact sampling impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](x, rows, floor, top_k, top_p, temperature, keys, tokens)


__all__ = ["IMPLEMENTATIONS", "default_impl", "exact_rows", "first_argmax", "gumbel", "row_keys", "threshold_bisect",
           "threshold_sorted", "truncated_gumbel_argmax"]
