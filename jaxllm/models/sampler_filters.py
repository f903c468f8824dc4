"""min_p / top-k / top-p sampling without a host sync or a vocabulary sort, exact (vLLM's order, ties kept).

The sampled token is argmax over the surviving tokens K of z = x / T + g (Gumbel-max; x the processed logits, g
the keyed noise of ``jaxllm.ops.sampling.gumbel``), with K = {x >= t} for a per-row threshold t (min_p, then
top-k, then top-p on the renormalised survivors: ``jaxllm.ops.sampling.reference``). Finding t needs a sort or
a long search when the nucleus is wide (a flat distribution: thousands of tokens), so the fast path does not:

0. When every sampled row has top_k < TOPK_CANDIDATES (``top_values_draw``), all of its survivors lie among its
   exact top-64 values (``top_k_values``: one pass over [S, V] plus two small sorts): min_p, top-k, top-p and the
   Gumbel-max run on those 64 values alone, with no other pass over the vocabulary. Otherwise:
1. ``floor``: the min_p threshold, raised to the k-th largest value when k <= TOPK_CANDIDATES, found exactly
   from the top-64 values (only when some row has such a k; min_p alone takes one max pass).
2. The race: the RACE_CANDIDATES tokens with the largest z among x >= floor (``race``: one pass computing z's
   block maxima, then small sorts). They are the first draws, in order, of sampling without replacement.
3. Membership, exactly, in one pass (``sampler_membership``: one variadic reduction): draw c survives iff fewer
   than k tokens lie strictly above it (a row without top-p) or the mass strictly above it is < top_p *
   mass(x >= floor) (a top-p row). Survival is monotone in the logit, so only the race's records (draws whose
   logit beats every earlier draw's) can be the answer, and the first MEMBERSHIP_TESTS records are tested. The
   answer is the first surviving record: the argmax of z over K, bit for bit the token the threshold would give.
   Without top-p and larger top-k (static), the first draw is the answer and this pass does not run.
A row is undecided when no tested record survives (about (1 - top_p)^8 for top-p: 4e-11 at 0.95; higher for
top-k > 64 on flat distributions), when it has both top_k > 64 and top_p (the mass of its top-k is unknown), or
(step 0) when its k-th value ties with values beyond the top 64.
Those rows, and only they, are drawn by ``jaxllm.ops.sampling.exact_rows`` (a per-row Pallas kernel on the GPU:
no lax.cond, whose predicate XLA's GPU runtime reads back to the host every step, stalling the next launch).
The token law is therefore exactly the threshold's, and a seeded row's token depends only on its seed, its
output index and its logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxllm.models.sampler_membership import first_member, records, survives
from jaxllm.ops.device_info import gpu_compute_capability
from jaxllm.ops.sampling import exact_rows, gumbel

TOPK_CANDIDATES = 64  # top-k up to this many is resolved exactly from the top values (step 1)
RACE_CANDIDATES = 8  # race draws tested per row (step 3)
RACE_BLOCK = 128  # column block of the race's block maxima
BLOCK = 128  # largest column block of top_k_values
CANDIDATE_BUDGET = 4096  # top_k_values sorts at most about this many candidates per row (k * block)
NEG_INF = float("-inf")


def _block_size(v: int, k: int) -> int:
    """Largest power of two <= min(BLOCK, CANDIDATE_BUDGET / k) that divides v (no padding copy), at least 8."""
    block = BLOCK
    while block > 8 and (block * k > CANDIDATE_BUDGET or v % block):
        block //= 2
    return block


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k`` whose outputs XLA cannot slice into the sort: XLA's CPU backend turns a top_k into its fast
    TopK call only when all k outputs are used, and a consumer that reads one column (the k-th value) would
    otherwise make it a full comparator sort of the row (~100x slower). The barrier takes (ids, values), not the
    top_k's own tuple: XLA's TopkDecomposer aborts on a top_k whose tuple feeds a barrier directly, which the
    tuple simplifier makes of (values, ids) in their own order."""
    values, ids = lax.top_k(x, k)
    ids, values = lax.optimization_barrier((ids, values))
    return values, ids


def top_k_values(x: jax.Array, k: int, block: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Exact top-k of each row of x [N, V] without sorting V: (values [N, k] descending, ids [N, k] i32). Takes
    the k column blocks with the largest maxima (every value above the k-th largest lies in a block whose max
    beats it), then ``lax.top_k`` over those candidates only: ``lax.top_k`` with k > 16 is a full sort on GPU
    (~2.6 ms for [256, 151936] f32 on an H200). Ties may be broken differently from ``lax.top_k``; the values
    are the same multiset."""
    n, v = x.shape
    block = block or _block_size(v, k)
    num_blocks = -(-v // block)
    if num_blocks < 4 * k:  # small vocabulary: the plain top_k is cheap
        vals, ids = _top_k(x, k)
        return vals, ids.astype(jnp.int32)
    if num_blocks * block != v:
        x = jnp.pad(x, ((0, 0), (0, num_blocks * block - v)), constant_values=NEG_INF)
    xb = x.reshape(n, num_blocks, block)
    _, block_ids = lax.top_k(xb.max(axis=-1), k)  # [N, k]
    cand = jnp.take_along_axis(xb, block_ids[:, :, None], axis=1).reshape(n, k * block)
    vals, pos = _top_k(cand, k)
    ids = jnp.take_along_axis(block_ids, pos // block, axis=1) * block + pos % block
    return vals, jnp.minimum(ids, v - 1).astype(jnp.int32)


def _perturbed(x, ids, floor, temperature, keys, noisy):
    """z = x / T + g where x >= floor, else -inf. x [S, ...] f32, ids int (x's trailing shape); per-row floor,
    temperature, noisy [S], keys [S, 2] u32."""
    row = lambda a: a.reshape(a.shape[:1] + (1,) * (x.ndim - 1))
    g = gumbel(ids.astype(jnp.uint32), row(keys[:, 0]), row(keys[:, 1]))
    z = x / row(temperature) + jnp.where(row(noisy), g, 0.0)
    return jnp.where(x >= row(floor), z, NEG_INF)


def race(x, floor, temperature, keys, noisy, m: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The m (default RACE_CANDIDATES) tokens with the largest z (``_perturbed``) per row of x [S, V], best
    first (first index on ties):
    (ids [S, m] i32, their x [S, m] f32; x = -inf where the row has fewer than m survivors)."""
    s, v = x.shape
    m = min(m or RACE_CANDIDATES, v)
    nb = -(-v // RACE_BLOCK)
    if nb < 4 * m:  # small vocabulary: z in full
        z, ids = lax.top_k(_perturbed(x, jnp.arange(v), floor, temperature, keys, noisy), m)
        cand_x = jnp.take_along_axis(x, ids, axis=1)
    else:
        if nb * RACE_BLOCK != v:
            x = jnp.pad(x, ((0, 0), (0, nb * RACE_BLOCK - v)), constant_values=NEG_INF)
        xb = x.reshape(s, nb, RACE_BLOCK)
        block_ids = jnp.arange(nb * RACE_BLOCK).reshape(nb, RACE_BLOCK)
        _, best = lax.top_k(_perturbed(xb, block_ids, floor, temperature, keys, noisy).max(axis=-1), m)
        cand_ids = (best[:, :, None] * RACE_BLOCK + jnp.arange(RACE_BLOCK)).reshape(s, m * RACE_BLOCK)
        cand_x = jnp.take_along_axis(xb, best[:, :, None], axis=1).reshape(s, m * RACE_BLOCK)
        z, pos = lax.top_k(_perturbed(cand_x, cand_ids, floor, temperature, keys, noisy), m)
        ids, cand_x = (jnp.take_along_axis(a, pos, axis=1) for a in (cand_ids, cand_x))
    # z = -inf: the row has fewer than m survivors (the rest lie below the floor, or are padding): no draw
    return jnp.minimum(ids, v - 1).astype(jnp.int32), jnp.where(z > NEG_INF, cand_x, NEG_INF)


def min_p_threshold(row_max: jax.Array, temperature: jax.Array, min_p: jax.Array) -> jax.Array:
    """min_p's threshold on the processed logits, [S]: p >= min_p * p_max  <=>  x >= max(x) + T * log(min_p)
    (row_max = max(x); min_p 0 gives -inf: off). The one rule of the sampler, its filters and the
    speculative verification."""
    return row_max + temperature * jnp.log(min_p)


def _min_p_floor(top, floor, min_p, temperature):
    """floor [S] raised to min_p's threshold (``min_p_threshold``; min_p None: unchanged)."""
    return floor if min_p is None else jnp.maximum(floor, min_p_threshold(top, temperature, min_p))


def _draw_from_top_values(vals, ids, floor, temperature, top_k, top_p, keys, noisy, v: int):
    """Step 0 on the exact top values vals [S, kc] (descending) and their ids [S, kc] of rows of V = v logits:
    (tokens [S] i32, undecided [S] bool). min_p's ``floor`` and top-k give t_b; when every token >= t_b is among
    the top values (their last value is below t_b, or kc = V), top-p (``threshold_sorted`` on them) and the
    Gumbel-max run on them alone. Otherwise a sampled row is undecided; a greedy row's token is its first maximum
    either way (``top_k_values`` lists tied values by index)."""
    kc = vals.shape[1]
    t_k = jnp.take_along_axis(vals, jnp.clip(top_k - 1, 0, kc - 1)[:, None], axis=1)[:, 0]
    t_b = jnp.maximum(floor, jnp.where(top_k <= kc, t_k, NEG_INF))
    top = jnp.where(jnp.isfinite(vals[:, :1]), vals[:, :1], 0.0)
    w = jnp.where(vals >= t_b[:, None], jnp.exp((vals - top) / temperature[:, None]), 0.0)
    ok = jnp.cumsum(w, axis=1) - w < (top_p * jnp.sum(w, axis=1))[:, None]  # mass strictly above: a prefix
    t_p = jnp.take_along_axis(vals, jnp.maximum(jnp.sum(ok, axis=1) - 1, 0)[:, None], axis=1)[:, 0]
    t = jnp.maximum(t_b, jnp.where(top_p < 1.0, t_p, NEG_INF))
    z = _perturbed(vals, ids, t, temperature, keys, noisy)  # -inf below t
    best = jnp.max(z, axis=1)
    tokens = jnp.min(jnp.where(z == best[:, None], ids, v), axis=1)  # the first index on ties, as argmax
    any_finite = best > NEG_INF
    tokens = jnp.where(any_finite, tokens, 0)  # every logit -inf: token 0, as argmax would
    beyond = (vals[:, kc - 1] >= t_b) & (kc < v)  # survivors of min_p / top-k may lie outside the top values
    return tokens, noisy & any_finite & beyond


def top_values_draw(x, floor, temperature, top_k, top_p, keys, noisy, *, min_p=None):
    """Step 0 of the module docstring, for batches whose sampled rows all have top_k < TOPK_CANDIDATES: (tokens
    [S] i32, undecided [S] bool, floor [S]: ``floor`` raised to the min_p threshold). One pass over [S, V] (the
    top values), no noise over the vocabulary. Arguments as ``sample_top_k_top_p``."""
    with jax.named_scope("top_values"):
        vals, ids = top_k_values(x, min(TOPK_CANDIDATES, x.shape[1]))  # [S, kc] descending
    floor = _min_p_floor(vals[:, 0], floor, min_p, temperature)
    tokens, undecided = _draw_from_top_values(vals, ids, floor, temperature, top_k, top_p, keys, noisy, x.shape[1])
    return tokens, undecided, floor


def fast_path(x, floor, temperature, top_k, top_p, keys, noisy, *, min_p=None, top_values: bool = True,
              membership: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Steps 1-3 of the module docstring: (tokens [S] i32, undecided [S] bool: rows whose token must come from
    ``exact_rows``, floor [S]: ``floor`` raised to the min_p threshold). With ``top_values``, the rows with
    top_k < TOPK_CANDIDATES take step 0's token (as in ``top_values_draw``), so that a row's token does not
    depend on the variant its batch runs. Arguments as ``sample_top_k_top_p``."""
    v = x.shape[1]
    kc = min(TOPK_CANDIDATES, v)
    t_k = NEG_INF
    if top_values:
        with jax.named_scope("top_values"):
            vals, top_ids = top_k_values(x, kc)  # [S, kc] descending
        top = vals[:, 0]
        t_k = jnp.take_along_axis(vals, jnp.clip(top_k - 1, 0, kc - 1)[:, None], axis=1)[:, 0]
        t_k = jnp.where(top_k <= kc, t_k, NEG_INF)
    else:  # min_p alone needs the row maximum: one pass
        top = jnp.max(x, axis=-1) if min_p is not None else None
    floor = _min_p_floor(top, floor, min_p, temperature)
    t = jnp.maximum(floor, t_k)
    with jax.named_scope("race"):
        ids, cand_x = race(x, t, temperature, keys, noisy)
    beyond_t = (top_k < v) & ((top_k > kc) | (not top_values))  # a top-k that t does not hold
    if membership:
        # the mass's scale: the winner's logit, within T * (max(g) - min(g)) < 20 T of the row maximum
        # (Gumbel-max), so exp((x - it) / T) < e^20 cannot overflow a row's sum
        scale = jnp.where(cand_x[:, 0] > NEG_INF, cand_x[:, 0], 0.0)
        ids, tested = records(ids, cand_x)  # the race's first draw is its first record
        with jax.named_scope("membership"):
            ok = survives(x, tested, t, scale, temperature, top_k, top_p, gpu_compute_capability() is not None)
        unknown = beyond_t & (top_p < 1.0)  # the mass of the row's top-k is unknown
    else:  # the survivors are x >= t (min_p, top-k within the top values): the race's first draw is the token
        ok, unknown = cand_x > NEG_INF, beyond_t | (top_p < 1.0)
    tokens, some = first_member(ok, ids)
    any_finite = cand_x[:, 0] > NEG_INF
    tokens = jnp.where(any_finite, tokens, 0)  # every logit -inf: token 0, as argmax would
    undecided = noisy & any_finite & (unknown | ~some)
    if top_values:
        listed = (top_k < kc) | (kc == v)
        by_values = _draw_from_top_values(vals, top_ids, floor, temperature, top_k, top_p, keys, noisy, v)
        tokens, undecided = (jnp.where(listed, a, b) for a, b in zip(by_values, (tokens, undecided)))
    return tokens, undecided, floor


def sample_top_k_top_p(x, floor, temperature, top_k, top_p, keys, noisy, *, min_p=None, top_values: bool = True,
                       race: bool = True, membership: bool = True) -> jax.Array:
    """Tokens [S] i32: x [S, V] f32 processed logits; floor [S] f32 (keep x >= floor; -inf: off); temperature
    [S]; top_k [S] i32 (V = off); top_p [S] f32 (1 = off); keys [S, 2] u32 noise keys; noisy [S] bool (False:
    greedy row, no noise); min_p [S] f32 or None (0 = off): the floor rises to max(x) + T * log(min_p), the row
    maximum taken from a pass the path makes anyway. The static parts (decided on the host, as the sampler's
    ``SamplerConfig``): ``top_values`` (some row has top_k <= TOPK_CANDIDATES: its threshold comes from the exact
    top values), ``race`` (some sampled row may draw a token outside its top values: the race over the whole
    vocabulary; without it, ``top_values_draw``), ``membership`` (some row has top_p < 1 or a larger top_k < V:
    the exact membership pass; without it every row's survivors are x >= its threshold and the race's first draw
    is the token). A row a variant cannot decide is drawn by ``exact_rows``. No host sync; see the module
    docstring for the steps."""
    if top_values and not race:
        tokens, undecided, floor = top_values_draw(x, floor, temperature, top_k, top_p, keys, noisy, min_p=min_p)
    else:
        tokens, undecided, floor = fast_path(x, floor, temperature, top_k, top_p, keys, noisy, min_p=min_p,
                                             top_values=top_values, membership=membership)
    with jax.named_scope("exact_rows"):
        return exact_rows(x, undecided, floor, top_k, top_p, temperature, keys, tokens)
