"""On-device sampler: logits [S, V] f32 of each sequence's last token -> sampled token ids, inside the jitted
step.

``sample(logits, metadata, config)`` applies vLLM's processing order: allowed_token_ids mask, logit_bias,
banned ids (min_tokens stop ids, bad words) to -inf, penalties (repetition on prompt+output tokens: positive
logits divided, negative multiplied; frequency/presence on output tokens), then for random rows temperature,
min_p, top_k, top_p, and samples. Greedy rows (temperature < 1e-5) take the argmax of the processed logits
(first index on ties). Random rows use the Gumbel-max trick, argmax(x / T + g), with g a keyed hash of the
token id under the row key ``fold_in(threefry_key(seed), output_index)``: it depends only on the request's
seed and ``output_index``, so a seeded request samples the same tokens whatever else is in the batch and
wherever its row is.

top-k / top-p are exact and tie-inclusive without sorting the vocabulary (``lax.top_k`` with k > 16 IS a full
sort on GPU: ~2.6 ms for [256, 151936] f32 on an H200):
  * ``top_k_values`` finds the exact top K of a row by taking the K column blocks (<= 128 wide, K * block <=
    4096) with the largest maxima, then ``lax.top_k`` over those candidates only. Every value above the K-th
    largest lies in a block whose max beats it, so the K values are exact. Cost: one pass over [S, V] plus two
    small sorts.
  * min_p keeps x >= max(x) + log(min_p) (p >= min_p * p_max), applied first.
  * top-k keeps x >= (k-th largest value): from the top ``TOPK_CANDIDATES`` (64) values when k <= 64, else by
    bisection on the float's order-preserving uint32 bits (largest t with count(x >= t) >= k).
  * top-p keeps x >= t where t is the largest value whose "mass at or above t" reaches top_p: equivalently,
    token i survives iff the probability mass of tokens strictly more likely than i is < top_p, so all tokens
    tied at the boundary survive (vLLM's sort-based mask keeps an arbitrary subset of them). t comes from the
    cumulative sum over the top 64 candidates when their mass reaches top_p, else from the same bisection on
    the mass.
  * The bisection decides ``BISECT_BITS`` (2) bits per pass: 16 passes over [S, V], 3 candidate thresholds
    each.
  All filters reduce to one threshold per row on the processed (un-scaled) logits, computed only when some
  row uses min_p / top-k / top-p: the host decides that (``SamplerConfig.random / min_p / top_k_top_p`` are
  static), because a ``lax.cond`` on device data makes XLA's GPU runtime copy the predicate to the host and
  wait for it, which stalls the launch of the next step. Inside the top-k/top-p part, the bisections run under
  ``lax.cond``s only when a row needs them (k > 64, or a nucleus beyond the top 64): those rare steps sync.
Measured on one H200 (jax 0.11.2, V = 151936, S = 256 rows; S = 8 in brackets), whole sampler program, us:
greedy variant 68 (46); temperature only 360-400 (141); + logprobs 569 (193); min_p 416 (161); top_k=50 705
(298); top_p=0.9 on a peaked distribution (fast path) 701 (300); top_p=0.9 on a flat one / top_k=1000
(bisection) 1990 / 1578 (378 / 502); penalties 571 (138). Each variant compiles in ~1.2-1.9 s on GPU, ~2-4 s
on CPU.

Structured outputs (``config.grammar_words``): a packed allowed-token bitmask per row, built on the host by
``jaxllm.structured_outputs.grammar``, sets the logits of disallowed tokens to -inf before everything else.

Non-finite logits (``nonfinite_rows``): a row whose raw logits hold a NaN or +inf, or whose processed logits
leave no token, is flagged in ``SamplerOutput.nonfinite``; the engine then ends that request with finish_reason
"error" instead of emitting the arbitrary id argmax returns. The flag travels with the token ids (no extra sync).

Logprobs (``config.num_logprobs`` > 0) come from the RAW logits (vLLM v1's default ``raw_logprobs``; after the grammar mask): the
sampled token's logprob, its rank (1 + number of tokens with a strictly greater logprob) and the top-k ids and
logprobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TOPK_CANDIDATES = 64  # static K of the top-k/top-p fast path (rows beyond it take the bisection fallback)
BLOCK = 128  # largest column block of top_k_values
CANDIDATE_BUDGET = 4096  # top_k_values sorts at most about this many candidates per row (k * block)
_NEG_INF = float("-inf")
_U_MAX = float(np.nextafter(np.float32(1.0), np.float32(0.0)))  # largest f32 below 1: 1 - 2^-24


@dataclasses.dataclass
class SamplerOutput:
    """S = padded number of sequences; the logprob fields are None unless ``config.num_logprobs``."""

    token_ids: Any  # [S] i32
    logprob: Any = None  # [S] f32: raw logprob of the sampled token
    rank: Any = None  # [S] i32: 1 + number of tokens with a strictly greater raw logprob
    top_ids: Any = None  # [S, num_logprobs] i32, best first
    top_logprobs: Any = None  # [S, num_logprobs] f32
    nonfinite: Any = None  # [S] bool: the row has no valid token (``nonfinite_rows``); its token is meaningless


jax.tree_util.register_dataclass(
    SamplerOutput,
    data_fields=["token_ids", "logprob", "rank", "top_ids", "top_logprobs", "nonfinite"],
    meta_fields=[],
)


def _block_size(v: int, k: int) -> int:
    """Largest power of two <= min(BLOCK, CANDIDATE_BUDGET / k) that divides v (no padding copy), at least
    8."""
    block = BLOCK
    while block > 8 and (block * k > CANDIDATE_BUDGET or v % block):
        block //= 2
    return block


def top_k_values(x: jax.Array, k: int, block: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Exact top-k of each row of x [N, V] without sorting V: (values [N, k] descending, ids [N, k] i32).

    Ties may be broken differently from ``lax.top_k`` but the values are the same multiset."""
    n, v = x.shape
    block = block or _block_size(v, k)
    num_blocks = -(-v // block)
    if num_blocks < 4 * k:  # small vocabulary: the plain top_k is cheap
        vals, ids = lax.top_k(x, k)
        return vals, ids.astype(jnp.int32)
    if num_blocks * block != v:
        x = jnp.pad(x, ((0, 0), (0, num_blocks * block - v)), constant_values=_NEG_INF)
    xb = x.reshape(n, num_blocks, block)
    _, block_ids = lax.top_k(xb.max(axis=-1), k)  # [N, k]
    cand = jnp.take_along_axis(xb, block_ids[:, :, None], axis=1).reshape(n, k * block)
    vals, pos = lax.top_k(cand, k)
    ids = jnp.take_along_axis(block_ids, pos // block, axis=1) * block + pos % block
    return vals, jnp.minimum(ids, v - 1).astype(jnp.int32)


def token_logprobs(logits: jax.Array, target_ids: jax.Array, k: int):
    """Raw logprobs of logits [N, V] for target_ids [N] -> (logprob [N] f32, rank [N] i32, top_ids [N, k] i32,
    top_logprobs [N, k] f32). ``k`` is static (0 gives [N, 0] arrays). Used for sample and prompt logprobs."""
    x = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(x, axis=-1)
    tok = jnp.take_along_axis(x, target_ids.astype(jnp.int32)[:, None], axis=1)[:, 0]
    rank = 1 + jnp.sum(x > tok[:, None], axis=-1, dtype=jnp.int32)  # log_softmax keeps the order
    if k == 0:
        n = x.shape[0]
        return tok - lse, rank, jnp.zeros((n, 0), jnp.int32), jnp.zeros((n, 0), jnp.float32)
    top, top_ids = top_k_values(x, k)
    return tok - lse, rank, top_ids, top - lse[:, None]


def _rows(ids: jax.Array) -> jax.Array:
    return jnp.arange(ids.shape[0])[:, None]


def _apply_processors(x: jax.Array, md: Any, penalties: bool) -> jax.Array:
    """allowed_token_ids, logit_bias + banned ids (one scatter-add: a banned id adds -inf), penalties (vLLM's
    order). Sparse ids padded with V are dropped. No lax.cond here: a cond returning [S, V] copies it even
    when the branch is the identity (measured on an H200), so this is one pass either way."""
    s, v = x.shape
    # One pass writes a fresh [S, V] (allowed mask applied); the sparse scatter-add then updates it in place.
    mask = jnp.zeros((s, v), bool).at[_rows(md.allowed_ids), md.allowed_ids].set(True, mode="drop")
    x = jnp.where(md.has_allowed[:, None] & ~mask, _NEG_INF, x)
    ids = jnp.concatenate([md.bias_ids, md.banned_ids], axis=1)
    values = jnp.concatenate([md.bias_values, jnp.full(md.banned_ids.shape, _NEG_INF, jnp.float32)], axis=1)
    x = x.at[_rows(ids), ids].add(values, mode="drop")
    if penalties:
        ids = md.penalty_token_ids
        is_output = jnp.arange(ids.shape[1])[None, :] >= md.prompt_len[:, None]
        counts = (
            jnp.zeros((s, v), jnp.float32).at[_rows(ids), ids].add(is_output.astype(jnp.float32), mode="drop")
        )
        seen = jnp.zeros((s, v), bool).at[_rows(ids), ids].set(True, mode="drop")
        rep = md.repetition_penalty[:, None]
        x = jnp.where(seen, jnp.where(x > 0, x / rep, x * rep), x)
        x = x - md.frequency_penalty[:, None] * counts - md.presence_penalty[:, None] * (counts > 0)
    return x


def _sortable(x: jax.Array) -> jax.Array:
    """f32 -> u32 with the same order (negative floats: all bits flipped; others: sign bit set; -0.0 ->
    0.0)."""
    b = lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
    return jnp.where(b >> 31 == 1, ~b, b | jnp.uint32(0x80000000))


def _unsortable(u: jax.Array) -> jax.Array:
    b = jnp.where(u >> 31 == 1, u & jnp.uint32(0x7FFFFFFF), ~u)
    return lax.bitcast_convert_type(b, jnp.float32)


BISECT_BITS = 2  # bits decided per pass of the bisection (2: 16 passes, 3 candidate thresholds each)


def _bisect(x: jax.Array, weight: Callable[[jax.Array], jax.Array], target: jax.Array) -> jax.Array:
    """Largest value t with sum(weight(x)[x >= t]) >= target, per row, found bit by bit over the 32
    order-preserving bits of x: weight = 1 gives the target-th largest value; weight = unnormalized
    probability gives the top-p threshold. x [S, V]; target [S] -> t [S] f32. 32 / BISECT_BITS passes over [S,
    V]; weight is recomputed inline from x so each pass reads x only."""
    nb = BISECT_BITS
    steps = jnp.arange(1, 1 << nb, dtype=jnp.uint32)  # candidate digit values

    def step(i, t):
        shift = (32 - nb * (i + 1)).astype(jnp.uint32)
        cands = t[:, None] | (steps[None, :] << shift)  # [S, 2^nb - 1]
        u, w = _sortable(x), weight(x)
        mass = jnp.stack(
            [jnp.sum(jnp.where(u >= cands[:, j : j + 1], w, 0), axis=-1) for j in range(len(steps))], 1
        )
        digit = jnp.sum(
            mass >= target[:, None], axis=1, dtype=jnp.uint32
        )  # mass falls as the candidate rises
        return t | (digit << shift)

    return _unsortable(lax.fori_loop(0, 32 // nb, step, jnp.zeros(x.shape[:1], jnp.uint32)))


def _top_k_top_p_threshold(
    x: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, floor: jax.Array
) -> jax.Array:
    """Per-row threshold [S]: keep x >= it. x [S, V] processed logits before temperature, -inf = removed;
    temperature [S]; top_k [S] (V = off); top_p [S] (1 = off); floor [S]: the min_p threshold, applied first.
    Then top-k, then top-p on the renormalized survivors (vLLM's order). Thresholds are values of x itself, so
    the final ``x >= threshold`` is exact (scaling by the temperature only enters the probabilities)."""
    v = x.shape[1]
    kc = min(TOPK_CANDIDATES, v)
    vals, _ = top_k_values(x, kc)  # [S, kc] descending
    need_k = top_k < v
    t_k = jnp.take_along_axis(vals, jnp.clip(top_k - 1, 0, kc - 1)[:, None], axis=1)[:, 0]
    t_k = jnp.where(need_k, t_k, _NEG_INF)
    slow_k = need_k & (top_k > kc)
    t_k = lax.cond(
        jnp.any(slow_k), lambda: jnp.where(slow_k, _bisect(x, jnp.ones_like, top_k), t_k), lambda: t_k
    )
    t_k = jnp.maximum(t_k, floor)  # = the k-th largest of the min_p survivors, or the floor

    m = vals[:, :1]
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    temp = temperature[:, None]
    probs = lambda x: jnp.where(x >= t_k[:, None], jnp.exp((x - m) / temp), 0.0)  # unnormalized
    target = top_p * jnp.sum(probs(x), axis=-1)
    reached = jnp.cumsum(probs(vals), axis=-1) >= target[:, None]
    t_p = jnp.take_along_axis(vals, jnp.argmax(reached, axis=-1)[:, None], axis=1)[:, 0]
    need_p = top_p < 1.0
    slow_p = need_p & ~jnp.any(reached, axis=-1)
    t_p = jnp.where(need_p, t_p, _NEG_INF)
    t_p = lax.cond(jnp.any(slow_p), lambda: jnp.where(slow_p, _bisect(x, probs, target), t_p), lambda: t_p)
    return jnp.maximum(t_k, t_p)


def _mix32(h: jax.Array) -> jax.Array:
    """A bijective 32-bit integer mixer with full avalanche ("lowbias32", C. Wellons)."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
    h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def _gumbel_argmax(x: jax.Array, seeds: jax.Array, output_index: jax.Array, noisy: jax.Array) -> jax.Array:
    """argmax(x + Gumbel noise) per row, the noise keyed by (seed [S, 2] u32, output_index [S]) only; rows
    with noisy [S] False get no noise (greedy rows: a plain argmax).

    The row key is threefry's ``fold_in(key(seed), output_index)`` (S tiny threefry calls); the noise of token
    v is a keyed hash of (row key, v): two rounds of a 32-bit mixer, 24 bits -> uniform in (0, 1) ->
    -log(-log(u)). This is elementwise and fuses with the argmax: ~1 pass over [S, V], where vmapped
    ``jax.random.gumbel`` costs ~2x the time on GPU and ~1.3 s of compile time on CPU. u is capped at the
    largest float32 below 1, so the noise is always finite (a masked -inf logit stays -inf)."""
    keys = jax.vmap(
        lambda seed, index: jax.random.key_data(
            jax.random.fold_in(jax.random.wrap_key_data(seed, impl="threefry2x32"), index)
        )
    )(seeds, output_index)  # [S, 2] u32
    v = jnp.arange(x.shape[1], dtype=jnp.uint32)[None, :]
    h = _mix32(_mix32(v ^ keys[:, :1]) ^ keys[:, 1:])
    # (2^24 - 0.5) / 2^24 rounds to 1.0 in f32 (noise +inf: a forced token, NaN on a -inf logit): cap below 1
    u = jnp.minimum(((h >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24)), _U_MAX)
    noise = jnp.where(noisy[:, None], -jnp.log(-jnp.log(u)), 0.0)
    return jnp.argmax(x + noise, axis=-1).astype(jnp.int32)


def _filter_threshold(x: jax.Array, md: Any, config: Any) -> jax.Array:
    """min_p, top-k, top-p as one per-row threshold [S] on x [S, V] (before temperature): keep x >= it. A part
    no row uses (static ``config`` flags) is not computed."""
    t_min_p = jnp.full(x.shape[:1], _NEG_INF)
    if config.min_p:
        with jax.named_scope("min_p"):  # p >= min_p * p_max  <=>  x >= max(x) + T * log(min_p)
            t_min_p = jnp.max(x, axis=-1) + md.temperature * jnp.log(md.min_p)
    if not config.top_k_top_p:
        return t_min_p
    with jax.named_scope("top_k_top_p"):
        return _top_k_top_p_threshold(x, md.temperature, md.top_k, md.top_p, t_min_p)


def _random_tokens(x: jax.Array, md: Any, config: Any) -> jax.Array:
    """min_p, top_k, top_p, temperature, then Gumbel-max. x [S, V] processed logits -> [S] i32. Greedy rows
    (temperature 1, nothing to mask, no noise) come out as the argmax of x."""
    thresh = _filter_threshold(x, md, config)
    with jax.named_scope("gumbel_max"):
        scaled = jnp.where(x >= thresh[:, None], x / md.temperature[:, None], _NEG_INF)
        return _gumbel_argmax(scaled, md.seeds, md.output_index, ~md.greedy)


def apply_grammar_bitmask(logits: jax.Array, bitmask: jax.Array) -> jax.Array:
    """Structured outputs: logits [S, V] f32, bitmask [S, ceil(V / 32)] i32 (bit v % 32 of word v // 32 set =
    token v allowed; a row of -1 allows everything) -> logits with disallowed tokens at -inf. Unpacking the
    bits is elementwise and fuses with the select: one pass over [S, V]."""
    s, v = logits.shape
    bits = (bitmask[:, :, None] >> jnp.arange(32, dtype=jnp.int32)) & 1  # [S, W, 32]
    allowed = bits.reshape(s, -1)[:, :v] != 0
    return jnp.where(allowed, logits, _NEG_INF)


def apply_grammar_bitmask_reference(logits, bitmask):
    """Plain numpy reference of ``apply_grammar_bitmask`` (a loop over rows and tokens), for the tests."""
    import numpy as np

    out = np.array(logits, np.float32, copy=True)
    words = np.asarray(bitmask).astype(np.uint32)
    for r in range(out.shape[0]):
        for t in range(out.shape[1]):
            if not (int(words[r, t // 32]) >> (t % 32)) & 1:
                out[r, t] = _NEG_INF
    return out


def nonfinite_rows(raw: jax.Array, processed: jax.Array | None, tokens: jax.Array) -> jax.Array:
    """Rows [S] bool that must not emit their token: the raw logits [S, V] f32 hold a NaN or +inf (a broken
    forward: argmax would pick an arbitrary id), or no token survives the processing (every processed logit
    -inf or NaN). ``processed`` None (greedy-only variant): raw is what the argmax saw, and since argmax picks
    a NaN or +inf when there is one, the raw logit of the chosen token [S] tells it all with no extra pass.
    Otherwise one fused reduction over the raw row plus the processed logit of the chosen token."""
    chosen = jnp.take_along_axis(raw if processed is None else processed, tokens[:, None], axis=1)[:, 0]
    if processed is None:
        return ~jnp.isfinite(chosen)
    broken = jnp.any(jnp.isnan(raw) | (raw == jnp.inf), axis=-1)
    return broken | ~(chosen > _NEG_INF)  # NaN compares False: caught as well


def sample(logits: jax.Array, metadata: Any, config: Any) -> SamplerOutput:
    """logits [S, V] (any float dtype, computed as f32), metadata: ``SamplingMetadata`` pytree of device
    arrays, config: ``SamplerConfig`` (static) -> ``SamplerOutput``. Pure jax, no host sync; call inside the
    jitted step."""
    logits = logits.astype(jnp.float32)
    if config.greedy_only:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return SamplerOutput(token_ids=tokens, nonfinite=nonfinite_rows(logits, None, tokens))
    md = metadata
    if config.grammar_words:  # first, as vLLM: logprobs and every filter see the masked logits
        with jax.named_scope("grammar_bitmask"):
            logits = apply_grammar_bitmask(logits, md.grammar_bitmask)
    with jax.named_scope("logits_processors"):
        x = _apply_processors(logits, md, penalties=bool(config.penalty_len))
    if config.random:
        tokens = _random_tokens(x, md, config)
    else:
        tokens = jnp.argmax(x, axis=-1).astype(jnp.int32)
    out = SamplerOutput(token_ids=tokens, nonfinite=nonfinite_rows(logits, x, tokens))
    if config.num_logprobs:
        with jax.named_scope("logprobs"):
            out.logprob, out.rank, out.top_ids, out.top_logprobs = token_logprobs(
                logits, tokens, config.num_logprobs
            )
    return out
