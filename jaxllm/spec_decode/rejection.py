"""The acceptance rule of speculative decoding, on device, inside the sampler program (jax).

Standard speculative sampling (Leviathan et al. 2023; Chen et al. 2023) accepts a draft token x at a position
with probability min(1, p(x) / q(x)), p the target distribution, q the draft's; on rejection it samples from
norm(max(0, p - q)) and stops; when all k drafts are accepted it samples a bonus token from the last p.
n-gram drafts are deterministic: q is one-hot on x, so the rule is "accept with probability p(x), else sample
from p with x removed, renormalized". Sampling y ~ p and accepting iff y == x is exactly that rule: P(accept)
= p(x), and y conditioned on y != x has distribution norm(max(0, p - onehot(x))). So the runner samples every
speculative row with the plain sampler (``p`` fully processed: temperature, top-k/top-p/min-p, penalties,
logit_bias, allowed/banned ids; greedy rows take the argmax) and ``accepted_rows`` keeps the prefix of rows
up to the first mismatch. Each row's random stream is keyed by (seed, output index) as without speculation,
so a seeded request samples the same tokens with or without it.

Sampled drafts (draft-model speculation of a request with temperature > 0): the draft token x is drawn from the
draft's processed distribution q (``draft_tokens``), so the rule is applied as written (``verify_sampled``): a
uniform u accepts x iff u * q(x) < p(x); a rejected row emits a draw from norm(max(0, p - q)), which never
equals x (a rejection means p(x) < q(x)), so ``accepted_rows``'s "prefix up to the first mismatch" still marks
the emitted rows; the bonus row is the plain sample of p. p and q are the dense processed distributions
(``processed_probs``: the sampler's exact min_p / top-k / top-p threshold, then softmax(x / T) over the kept
tokens), the same law the plain sampler draws from. The draft's draw, the uniform and the residual draw use
three streams derived from the row key ``fold_in(key(seed), output_index)`` (``tagged_keys``), independent of
each other and of the plain sampler's noise, so a seeded request is reproducible.

``rejection_sample_reference`` is the textbook rule written out for one sequence (uniforms, residual
distribution), the reference the tests compare the sampler path against.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxllm.models.sampler import SamplerOutput, nonfinite_rows, processed_logits, sample
from jaxllm.models.sampler_filters import min_p_threshold
from jaxllm.models.sampler_logprobs import sample_logprobs
from jaxllm.ops.sampling import first_argmax, row_keys, threshold_sorted, truncated_gumbel_argmax

DRAFT_TAG, ACCEPT_TAG, RESIDUAL_TAG = 1, 2, 3  # the derived random streams of a row (``tagged_keys``)


def accepted_rows(sampled: jax.Array, draft: jax.Array, row_start: jax.Array) -> jax.Array:
    """Which rows' sampled tokens are emitted. Rows are ragged per sequence: a speculative sequence with k
    drafts owns k + 1 consecutive rows starting at ``row_start``; row j is compared with draft j + 1.

    sampled [R] i32: the target's sample of each row; draft [R] i32: the draft token the row's sample must
    equal for the next row to count (-1: none, i.e. a sequence's last row or a plain row); row_start [R] i32:
    the first row of the row's sequence. -> valid [R] bool: no mismatch in rows [row_start, row)."""
    mismatch = ((draft >= 0) & (sampled != draft)).astype(jnp.int32)
    before = jnp.cumsum(mismatch) - mismatch  # mismatches in rows [0, row)
    return before == before[row_start]


def tagged_keys(keys: jax.Array, tag: int) -> jax.Array:
    """Row keys [R, 2] u32 -> the keys of their stream ``tag`` [R, 2] u32: fold_in(key, tag)."""
    fold = lambda k: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(k, impl="threefry2x32"), tag))
    return jax.vmap(fold)(keys)


def processed_probs(x: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array,
                    min_p: jax.Array, top_k_top_p: bool = True) -> jax.Array:
    """The law the plain sampler draws a random row from: x [R, V] f32 processed logits, temperature / top_p /
    min_p [R] f32, top_k [R] i32 (V = off) -> probs [R, V] f32 (rows sum to 1; an all -inf row gives zeros).
    The threshold is ``threshold_sorted``'s (a sort per row: only steps with sampled drafts pay it); static
    ``top_k_top_p`` False (no row uses them) keeps the min_p floor only and sorts nothing."""
    floor = min_p_threshold(jnp.max(x, axis=-1), temperature, min_p)
    t = threshold_sorted(x, floor, top_k, top_p, temperature) if top_k_top_p else floor
    m = jnp.max(x, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.where(x >= t[:, None], jnp.exp((x - m) / temperature[:, None]), 0.0)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)


def draft_tokens(logits: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, min_p: jax.Array,
                 greedy: jax.Array, seeds: jax.Array, output_index: jax.Array,
                 top_k_top_p: bool = True) -> tuple[jax.Array, jax.Array]:
    """The draft model's proposals for one draft step: logits [R, V] (the draft's, one row per sequence), the
    rows' sampling parameters [R] (as ``SamplingMetadata``), greedy [R] bool, seeds [R, 2] u32, output_index [R]
    i32 (the output position drafted), static ``top_k_top_p`` (some row uses top-k / top-p) -> (tokens [R] i32,
    q [R, V] f32). Greedy rows take the argmax (a one-hot
    q, verified by the plain path); the others draw from q = ``processed_probs`` with the row's DRAFT stream."""
    x = logits.astype(jnp.float32)
    q = processed_probs(x, temperature, top_k, top_p, min_p, top_k_top_p)
    keys = tagged_keys(row_keys(seeds, output_index), DRAFT_TAG)
    sampled = truncated_gumbel_argmax(jnp.log(q), jnp.full(x.shape[:1], -jnp.inf), jnp.ones_like(temperature),
                                      keys, ~greedy)
    return jnp.where(greedy, first_argmax(x), sampled).astype(jnp.int32), q


def verify_sampled(p: jax.Array, q: jax.Array, draft: jax.Array, has_q: jax.Array, row_key: jax.Array,
                   plain: jax.Array) -> jax.Array:
    """Standard speculative sampling of the rows with a sampled draft: p / q [R, V] target / draft laws, draft
    [R] i32 the draft token of the row (drawn from q), has_q [R] bool, row_key [R, 2] u32 the row's key, plain
    [R] i32 the plain sampler's token (kept where not has_q). -> tokens [R] i32: the draft where accepted (u *
    q(x) < p(x)), else a draw from norm(max(0, p - q)) (from p when that is empty: p == q up to rounding)."""
    x = jnp.clip(draft, 0, p.shape[1] - 1)[:, None]
    px, qx = jnp.take_along_axis(p, x, axis=1)[:, 0], jnp.take_along_axis(q, x, axis=1)[:, 0]
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.wrap_key_data(k, impl="threefry2x32")))(
        tagged_keys(row_key, ACCEPT_TAG))
    residual = jnp.maximum(p - q, 0.0)
    residual = jnp.where(jnp.sum(residual, axis=-1, keepdims=True) > 0, residual, p)
    n = p.shape[0]
    recovered = truncated_gumbel_argmax(jnp.log(residual), jnp.full((n,), -jnp.inf), jnp.ones((n,), jnp.float32),
                                        tagged_keys(row_key, RESIDUAL_TAG), jnp.ones((n,), bool))
    return jnp.where(has_q, jnp.where(u * qx < px, draft, recovered), plain).astype(jnp.int32)


def sample_and_verify(logits: jax.Array, md, config, draft: jax.Array, q_index: jax.Array,
                      draft_probs: tuple[jax.Array, ...]) -> SamplerOutput:
    """The sampler with sampled drafts verified: logits [L, V], md / config the rows' ``SamplingMetadata`` and
    static ``SamplerConfig``, draft [L] i32 each row's draft token (-1: none), q_index [L] i32 the row of its
    q in the draft steps' distributions ``draft_probs`` (k arrays [D, V], concatenated; -1: none or a
    deterministic draft). Rows with a q take ``verify_sampled``'s token, the others the plain sampler's; the
    logprobs (of ``config.logprobs_mode``) and non-finite flags are those of the emitted token."""
    out = sample(logits, md, dataclasses.replace(config, num_logprobs=0, logprobs_mode="raw_logprobs"))
    if config.greedy_only or not config.random:  # no random row: every draft is deterministic
        return sample(logits, md, config) if config.num_logprobs else out
    masked, x = processed_logits(logits.astype(jnp.float32), md, config)
    with jax.named_scope("verify_sampled_drafts"):
        p = processed_probs(x, md.temperature, md.top_k, md.top_p, md.min_p, config.top_k or config.top_p)
        q_all = jnp.concatenate(draft_probs, axis=0)
        q = q_all[jnp.clip(q_index, 0, q_all.shape[0] - 1)]
        tokens = verify_sampled(p, q, draft, (q_index >= 0) & ~md.greedy, row_keys(md.seeds, md.output_index),
                                out.token_ids)
    out = SamplerOutput(token_ids=tokens, nonfinite=nonfinite_rows(masked, x, tokens))
    if config.num_logprobs:
        out.logprob, out.rank, out.top_ids, out.top_logprobs = sample_logprobs(masked, x, md, config, tokens)
    return out


def rejection_sample_reference(key: jax.Array, probs: jax.Array, draft: jax.Array,
                               draft_probs: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The textbook rule for one sequence: probs [K + 1, V] target distributions (rows sum to 1), draft [K] i32,
    draft_probs [K, V] the draft's distributions q (None: deterministic drafts, a one-hot q) -> (tokens [K + 1]
    i32, -1 after the last emitted token, num_emitted i32 in 1..K + 1)."""
    num_k = draft.shape[0]
    if draft_probs is None:
        draft_probs = jax.nn.one_hot(draft, probs.shape[1])
    keys = jax.random.split(key, 2 * num_k + 1)
    tokens = jnp.full((num_k + 1,), -1, jnp.int32)
    done = jnp.bool_(False)
    for j in range(num_k):
        p, q = probs[j], draft_probs[j]
        accept = jax.random.uniform(keys[2 * j]) < p[draft[j]] / q[draft[j]]  # min(1, p(x) / q(x))
        residual = jnp.maximum(p - q, 0.0)  # norm(max(0, p - q))
        residual = residual / jnp.maximum(residual.sum(), 1e-30)
        recovered = jax.random.categorical(keys[2 * j + 1], jnp.log(residual)).astype(jnp.int32)
        tokens = tokens.at[j].set(jnp.where(done, -1, jnp.where(accept, draft[j], recovered)))
        done = done | ~accept
    bonus = jax.random.categorical(keys[-1], jnp.log(probs[num_k])).astype(jnp.int32)
    tokens = tokens.at[num_k].set(jnp.where(done, -1, bonus))
    return tokens, jnp.sum(tokens >= 0).astype(jnp.int32)
