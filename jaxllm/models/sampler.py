"""On-device sampler: logits [S, V] f32 of each sequence's last token -> sampled token ids, inside the jitted
step.

``sample(logits, metadata, config)`` applies vLLM's processing order: allowed_token_ids mask, logit_bias,
banned ids (min_tokens stop ids, bad words) to -inf, penalties (repetition on prompt+output tokens: positive
logits divided, negative multiplied; frequency/presence on output tokens), then for random rows temperature,
min_p, top_k, top_p, and samples. Greedy rows (temperature < 1e-5) take the argmax of the processed logits
(first index on ties). Random rows use the Gumbel-max trick, argmax(x / T + g), with g a keyed hash of the
token id under the row key ``fold_in(threefry_key(seed), output_index)`` (``jaxllm.ops.sampling.noise``): it
depends only on the request's seed and ``output_index``, so a seeded request samples the same tokens whatever
else is in the batch and wherever its row is.

min_p keeps x >= max(x) + T * log(min_p) (p >= min_p * p_max): one pass. top-k / top-p (exact, tie-inclusive,
vLLM's order) run in ``sampler_filters`` without sorting the vocabulary and without a host sync: a race of
the 8 best Gumbel draws tested exactly for membership, the rare undecided rows drawn by an exact per-row
kernel. Which parts run is decided on the host (``SamplerConfig.random / min_p / top_k / top_p`` are static),
because a ``lax.cond`` on device data makes XLA's GPU runtime copy the predicate to the host and wait for it,
which stalls the launch of the next step. ``scripts/bench_sampler.py`` times every variant.

Structured outputs (``config.grammar_words``): a packed allowed-token bitmask per row, built on the host by
``jaxllm.structured_outputs.grammar``, sets the logits of disallowed tokens to -inf before everything else.

Non-finite logits (``nonfinite_rows``): a row whose raw logits hold a NaN or +inf, or whose processed logits
leave no token, is flagged in ``SamplerOutput.nonfinite``; the engine then ends that request with finish_reason
"error" instead of emitting the arbitrary id argmax returns. The flag travels with the token ids (no extra sync).

Logprobs (``config.num_logprobs`` > 0): the sampled token's value, its rank (1 + number of tokens with a strictly
greater value) and the top-k ids and values, of what ``config.logprobs_mode`` (the engine's) names
(``sampler_logprobs``: vLLM's default ``raw_logprobs`` is log_softmax of the raw logits, after the grammar mask).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxllm.models.sampler_filters import min_p_threshold, sample_top_k_top_p, top_k_values
from jaxllm.models.sampler_logprobs import sample_logprobs, token_logprobs
from jaxllm.ops.sampling import first_argmax, row_keys, truncated_gumbel_argmax

_NEG_INF = float("-inf")
# token_logprobs (sampler_logprobs.py) and top_k_values (sampler_filters.py) keep their import path here
__all__ = ["SamplerOutput", "apply_grammar_bitmask", "apply_grammar_bitmask_reference", "nonfinite_rows",
           "processed_logits", "sample", "token_logprobs", "top_k_values"]


@dataclasses.dataclass
class SamplerOutput:
    """S = padded number of sequences; the logprob fields are None unless ``config.num_logprobs``."""

    token_ids: Any  # [S] i32
    logprob: Any = None  # [S] f32: the sampled token's value under the logprobs_mode (default: raw logprob)
    rank: Any = None  # [S] i32: number of tokens whose value is >= the token's (vLLM's rank)
    top_ids: Any = None  # [S, num_logprobs] i32, best first
    top_logprobs: Any = None  # [S, num_logprobs] f32
    nonfinite: Any = None  # [S] bool: the row has no valid token (``nonfinite_rows``); its token is meaningless


jax.tree_util.register_dataclass(
    SamplerOutput,
    data_fields=["token_ids", "logprob", "rank", "top_ids", "top_logprobs", "nonfinite"],
    meta_fields=[],
)


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


def _gumbel_argmax(x: jax.Array, seeds: jax.Array, output_index: jax.Array, noisy: jax.Array) -> jax.Array:
    """argmax(x + Gumbel noise) per row, the noise keyed by (seed [S, 2] u32, output_index [S]) only; rows
    with noisy [S] False get no noise (greedy rows: a plain argmax). One pass over x [S, V]."""
    ones = jnp.ones(x.shape[:1], jnp.float32)
    keys = row_keys(seeds, output_index)
    return truncated_gumbel_argmax(x, jnp.full_like(ones, _NEG_INF), ones, keys, noisy)


def _random_tokens(x: jax.Array, md: Any, config: Any) -> jax.Array:
    """min_p, top_k, top_p, temperature, then Gumbel-max. x [S, V] processed logits -> [S] i32. Greedy rows
    (temperature 1, nothing to mask, no noise) come out as the argmax of x. A part no row uses (static
    ``config`` flags) is not computed: min_p alone is one max pass before the Gumbel-max pass; with top-k / top-p
    the row maximum comes from their passes."""
    floor = jnp.full(x.shape[:1], _NEG_INF)
    keys = row_keys(md.seeds, md.output_index)
    if config.top_k or config.top_p:
        with jax.named_scope("top_k_top_p"):
            return sample_top_k_top_p(x, floor, md.temperature, md.top_k, md.top_p, keys, ~md.greedy,
                                      min_p=md.min_p if config.min_p else None, top_values=config.top_k,
                                      race=config.top_p, membership=config.top_p)
    if config.min_p:
        with jax.named_scope("min_p"):  # p >= min_p * p_max  <=>  x >= max(x) + T * log(min_p)
            floor = min_p_threshold(jnp.max(x, axis=-1), md.temperature, md.min_p)
    with jax.named_scope("gumbel_max"):
        return truncated_gumbel_argmax(x, floor, md.temperature, keys, ~md.greedy)


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


def processed_logits(logits: jax.Array, md: Any, config: Any) -> tuple[jax.Array, jax.Array]:
    """logits [S, V] f32 -> (logits after the grammar bitmask, processed logits x [S, V]: allowed ids,
    logit_bias, banned ids, penalties). Not for ``greedy_only`` configs (no metadata)."""
    if config.grammar_words:  # first, as vLLM: logprobs and every filter see the masked logits
        with jax.named_scope("grammar_bitmask"):
            logits = apply_grammar_bitmask(logits, md.grammar_bitmask)
    with jax.named_scope("logits_processors"):
        return logits, _apply_processors(logits, md, penalties=bool(config.penalty_len))


def sample(logits: jax.Array, metadata: Any, config: Any) -> SamplerOutput:
    """logits [S, V] (any float dtype, computed as f32), metadata: ``SamplingMetadata`` pytree of device
    arrays, config: ``SamplerConfig`` (static; its ``logprobs_mode`` says what the logprob fields hold) ->
    ``SamplerOutput``. Pure jax, no host sync; call inside the jitted step."""
    logits = logits.astype(jnp.float32)
    if config.greedy_only:
        tokens = first_argmax(logits)
        return SamplerOutput(token_ids=tokens, nonfinite=nonfinite_rows(logits, None, tokens))
    md = metadata
    logits, x = processed_logits(logits, md, config)
    if config.random:
        tokens = _random_tokens(x, md, config)
    else:
        tokens = first_argmax(x)
    out = SamplerOutput(token_ids=tokens, nonfinite=nonfinite_rows(logits, x, tokens))
    if config.num_logprobs:
        with jax.named_scope("logprobs"):
            out.logprob, out.rank, out.top_ids, out.top_logprobs = sample_logprobs(logits, x, md, config, tokens)
    return out
