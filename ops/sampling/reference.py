"""Pure-jnp references of exact truncated sampling (vLLM's min_p -> top-k -> top-p order, ties kept).

Every filter is one per-row threshold on the processed (un-scaled) logits x: keep x >= t. Thresholds are values
of x itself, so the final mask is exact (the temperature enters only the probabilities). With
floor = the min_p threshold (-inf: off):
  * top-k keeps, among x >= floor, the tokens with fewer than k tokens strictly above them: x >= max(floor,
    k-th largest of x) (tie-inclusive);
  * top-p then keeps token i of those survivors B iff the mass of B strictly above i is < top_p * mass(B), with
    mass = exp((x - max) / T): every token tied at the boundary survives.
``threshold_sorted`` computes this by sorting each row (the test reference); ``threshold_bisect`` by a bit-wise
bisection over the float's order-preserving uint32 bits without sorting (16 passes over [S, V]; the off-GPU
runtime path for the rows the fast path cannot decide). ``truncated_gumbel_argmax`` draws the token.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ..device_info import gpu_compute_capability
from .noise import gumbel

NEG_INF = float("-inf")
BISECT_BITS = 2  # bits decided per pass of threshold_bisect (16 passes, 3 candidate thresholds each)


def sortable(x: jax.Array) -> jax.Array:
    """f32 -> u32 with the same order (negative floats: all bits flipped; others: sign bit set; -0.0 -> 0.0)."""
    b = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
    return jnp.where(b >> 31 == 1, ~b, b | jnp.uint32(0x80000000))


def unsortable(u: jax.Array) -> jax.Array:
    b = jnp.where(u >> 31 == 1, u & jnp.uint32(0x7FFFFFFF), ~u)
    return lax.bitcast_convert_type(b, jnp.float32)


def _weights(x: jax.Array, keep_from: jax.Array, temperature: jax.Array) -> jax.Array:
    """Unnormalised probabilities exp((x - max) / T) of x [S, V] on x >= keep_from [S], 0 elsewhere."""
    m = jnp.max(x, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.where(x >= keep_from[:, None], jnp.exp((x - m) / temperature[:, None]), 0.0)


def threshold_sorted(x, floor, top_k, top_p, temperature) -> jax.Array:
    """Sort-based reference. x [S, V] f32 processed logits (-inf = removed); floor [S] f32 (min_p threshold);
    top_k [S] i32 (V = off); top_p [S] f32 (1 = off); temperature [S] f32 -> threshold [S] f32."""
    v = x.shape[1]
    desc = -jnp.sort(-x, axis=-1)
    t_k = jnp.take_along_axis(desc, jnp.clip(top_k - 1, 0, v - 1)[:, None], axis=1)[:, 0]
    t_b = jnp.maximum(floor, jnp.where(top_k < v, t_k, NEG_INF))
    w = _weights(desc, t_b, temperature)
    above = jnp.cumsum(w, axis=-1) - w  # mass strictly before each sorted position
    ok = above < (top_p * jnp.sum(w, axis=-1))[:, None]  # a prefix of the sorted row
    last = jnp.sum(ok, axis=-1) - 1  # >= 0: the row maximum always passes (mass above it is 0)
    t_p = jnp.take_along_axis(desc, last[:, None], axis=1)[:, 0]
    return jnp.maximum(t_b, jnp.where(top_p < 1.0, t_p, NEG_INF))


def _bisect(x: jax.Array, weight: Callable[[jax.Array], jax.Array], target: jax.Array) -> jax.Array:
    """Largest value t with sum(weight(x)[x >= t]) >= target per row, found BISECT_BITS bits per pass over the
    32 order-preserving bits of x: weight = 1 gives the target-th largest value, weight = unnormalised
    probability the top-p threshold. x [S, V]; target [S] -> t [S] f32. weight is recomputed from x inline, so
    each pass reads x only."""
    nb = BISECT_BITS
    steps = jnp.arange(1, 1 << nb, dtype=jnp.uint32)  # candidate digit values

    def step(i, t):
        shift = (32 - nb * (i + 1)).astype(jnp.uint32)
        cands = t[:, None] | (steps[None, :] << shift)  # [S, 2^nb - 1]
        u, w = sortable(x), weight(x)
        mass = jnp.stack([jnp.sum(jnp.where(u >= cands[:, j:j + 1], w, 0), axis=-1)
                          for j in range(len(steps))], 1)
        digit = jnp.sum(mass >= target[:, None], axis=1, dtype=jnp.uint32)  # mass falls as the candidate rises
        return t | (digit << shift)

    return unsortable(lax.fori_loop(0, 32 // nb, step, jnp.zeros(x.shape[:1], jnp.uint32)))


def threshold_bisect(x, floor, top_k, top_p, temperature) -> jax.Array:
    """``threshold_sorted`` without a sort: same arguments and result."""
    v = x.shape[1]
    t_k = _bisect(x, jnp.ones_like, top_k.astype(jnp.float32))
    t_b = jnp.maximum(floor, jnp.where(top_k < v, t_k, NEG_INF))
    probs = lambda y: _weights(y, t_b, temperature)
    t_p = _bisect(x, probs, top_p * jnp.sum(probs(x), axis=-1))
    return jnp.maximum(t_b, jnp.where(top_p < 1.0, t_p, NEG_INF))


def first_argmax(z: jax.Array) -> jax.Array:
    """``jnp.argmax(z, axis=-1)`` [S] i32 (first index of the maximum; of the first NaN if any). On the GPU
    XLA's argmax is one fused pass; XLA's CPU argmax (a variadic reduce) runs unvectorised, ~3-10x slower than
    a max pass plus a min-index pass, which the CPU gets."""
    if gpu_compute_capability() is not None:
        return jnp.argmax(z, axis=-1).astype(jnp.int32)
    m = jnp.max(z, axis=-1, keepdims=True)
    hit = (z == m) | jnp.isnan(z)
    return jnp.min(jnp.where(hit, jnp.arange(z.shape[-1], dtype=jnp.int32), z.shape[-1] - 1), axis=-1)


def truncated_gumbel_argmax(x, threshold, temperature, keys, noisy) -> jax.Array:
    """argmax over x >= threshold of x / T + Gumbel noise (keyed by keys [S, 2] u32; rows with noisy [S] False
    get none): one pass over x [S, V] -> [S] i32 (first index on ties, 0 when every logit is -inf)."""
    ids = jnp.arange(x.shape[1], dtype=jnp.uint32)[None, :]
    noise = jnp.where(noisy[:, None], gumbel(ids, keys[:, :1], keys[:, 1:]), 0.0)
    scaled = jnp.where(x >= threshold[:, None], x / temperature[:, None], NEG_INF)
    return first_argmax(scaled + noise)


def exact_rows_reference(x, rows, floor, top_k, top_p, temperature, keys) -> jax.Array:
    """Tokens [S] i32 of the rows with ``rows`` [S] True drawn exactly (bisection thresholds, noisy Gumbel-max);
    other rows get 0. The off-GPU runtime path of ``ops.sampling.exact_rows``."""
    t = threshold_bisect(x, floor, top_k, top_p, temperature)
    return jnp.where(rows, truncated_gumbel_argmax(x, t, temperature, keys, rows), 0)
