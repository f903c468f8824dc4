"""Exact truncated sampling (min_p / top-k / top-p, vLLM's order, ties kept) for the rows the sampler's fast path
cannot decide, and the keyed Gumbel noise the sampler uses.

* ``"pallas_triton"``: the per-row kernel (pallas_triton.py), the default on NVIDIA GPUs (sm_80+) where it
  compiles (a one-row probe, once per vocabulary size; a failure is logged and the reference serves): a row not
  selected costs nothing and no step syncs with the host. Forced off the GPU it runs in interpret mode (tests).
* ``"reference"``: the bisection of reference.py for every row under a ``lax.cond`` on "any row selected": the
  default elsewhere (a CPU runs the cond without a host round trip).
"""

from __future__ import annotations

import functools
import logging

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


@functools.cache
def kernel_compiles(v: int) -> bool:
    """Whether the kernel compiles for vocabulary size v on this GPU: a one-row probe (~1 s, once per v)."""
    f32 = jnp.float32
    shapes = [((1, v), f32), ((1,), bool), ((1,), f32), ((1,), jnp.int32), ((1,), f32), ((1,), f32),
              ((1, 2), jnp.uint32), ((1,), jnp.int32)]
    try:
        jax.jit(exact_rows_pallas).lower(*(jax.ShapeDtypeStruct(s, d) for s, d in shapes)).compile()
        return True
    except Exception as e:  # noqa: BLE001 - any compiler failure: serve with the reference instead
        logging.getLogger("jaxllm.ops.sampling").warning(
            "the exact-sampling Pallas kernel does not compile here (%s: %s); rows the sampler's fast path cannot "
            "decide use the reference under lax.cond, a host sync per top-k/top-p step", type(e).__name__, e)
        return False


def default_impl(vocab_size: int) -> str:
    cc = gpu_compute_capability()
    on_gpu = cc is not None and cc >= (8, 0)
    return "pallas_triton" if on_gpu and kernel_compiles(vocab_size) else "reference"


def exact_rows(x: jax.Array, rows: jax.Array, floor: jax.Array, top_k: jax.Array, top_p: jax.Array,
               temperature: jax.Array, keys: jax.Array, tokens: jax.Array, *,
               impl: str | None = None) -> jax.Array:
    """tokens [S] i32 with the rows where ``rows`` [S] is True replaced by an exact draw: min_p floor [S] f32,
    then top_k [S] i32 (V = off), then top_p [S] f32 (1 = off) on x [S, V] f32 processed logits, temperature
    [S], Gumbel-max keyed by keys [S, 2] u32. ``impl`` one of IMPLEMENTATIONS (None: ``default_impl(V)``)."""
    impl = impl or default_impl(x.shape[1])
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"exact sampling impl={impl!r} is not supported; choose one of {sorted(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](x, rows, floor, top_k, top_p, temperature, keys, tokens)


__all__ = ["IMPLEMENTATIONS", "default_impl", "exact_rows", "first_argmax", "gumbel", "kernel_compiles",
           "row_keys", "threshold_bisect", "threshold_sorted", "truncated_gumbel_argmax"]
