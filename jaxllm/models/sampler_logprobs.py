"""What ``logprobs`` and ``prompt_logprobs`` report: vLLM's ``logprobs_mode`` (an LLM keyword, static per engine:
the sampler variants with logprobs carry it in ``SamplerConfig.logprobs_mode``, the prompt logprobs program binds
it).

* ``"raw_logprobs"`` (the default): log_softmax of the model's logits, before every sampling parameter (after the
  structured-outputs bitmask, which vLLM too applies before its sampler).
* ``"raw_logits"``: those logits themselves, in float32.
* ``"processed_logits"``: the values the row's token is drawn from: the logits after allowed_token_ids, banned ids
  (min_tokens stops, bad words), logit_bias and the penalties, divided by the temperature (1 on a greedy row, as
  vLLM), with every token that min_p, top-k or top-p removes at -inf.
* ``"processed_logprobs"``: log_softmax of those values (a removed token: -inf).

The sampled token's value, its rank (the number of tokens whose value is >= its own, as vLLM counts: ties rank
ahead of it) and the top entries
all come from the mode's values; a top list longer than a processed row's survivors ends with -inf entries, as
vLLM's. The sampler never builds the top-k / top-p mask (``sampler_filters``), so the processed modes take the
exact sorted threshold (``threshold_sorted``) in the logprobs variants only, and only when a row of the step uses
top-k or top-p (min_p alone is one max pass; ``sampler_config.covers`` keeps such a step off a variant with more
filters). Prompt tokens go through no sampling parameter: the ``*_logprobs``
modes report log_softmax of the raw logits and the ``*_logits`` modes the raw logits (vLLM: raw and processed
agree there).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxllm.models.sampler_filters import min_p_threshold, top_k_values
from jaxllm.ops.sampling import threshold_sorted

# mode -> (values after the sampling parameters, normalised by log_softmax); EngineArgs validates the keyword
MODES = {
    "raw_logprobs": (False, True),
    "raw_logits": (False, False),
    "processed_logprobs": (True, True),
    "processed_logits": (True, False),
}
_NEG_INF = float("-inf")


def _mode(mode: str) -> tuple[bool, bool]:
    if mode not in MODES:
        raise ValueError(f"logprobs_mode={mode!r} is not supported; choose one of {', '.join(map(repr, MODES))}")
    return MODES[mode]


def token_logprobs(values: jax.Array, target_ids: jax.Array, k: int, normalize: bool = True):
    """values [N, V] -> (value of target_ids [N] f32, rank [N] i32, top_ids [N, k] i32, top values [N, k] f32).
    ``normalize``: log_softmax of values (the row's logsumexp is subtracted from the gathered entries only: no
    second [N, V] array); else the values themselves. ``k`` is static (0 gives [N, 0] arrays). Used for sample
    and prompt logprobs."""
    x = values.astype(jnp.float32)
    lse = jax.nn.logsumexp(x, axis=-1) if normalize else jnp.zeros(x.shape[:1], jnp.float32)
    tok = jnp.take_along_axis(x, target_ids.astype(jnp.int32)[:, None], axis=1)[:, 0]
    rank = jnp.sum(x >= tok[:, None], axis=-1, dtype=jnp.int32)  # vLLM's count; log_softmax keeps the order
    if k == 0:
        n = x.shape[0]
        return tok - lse, rank, jnp.zeros((n, 0), jnp.int32), jnp.zeros((n, 0), jnp.float32)
    top, top_ids = top_k_values(x, k)
    return tok - lse, rank, top_ids, top - lse[:, None]


def _keep_threshold(x: jax.Array, md: Any, config: Any, tokens: jax.Array) -> jax.Array | None:
    """Per-row threshold [S] f32 of the tokens min_p, top-k and top-p keep (x >= it), or None when no row of the
    variant uses them. Lowered to the sampled token's value where that lies below it (the sampler's fast path
    sums the top-p mass in another order, so a token at the boundary may round the other way): the token drawn
    is always reported among the survivors."""
    if not (config.min_p or config.top_k or config.top_p):
        return None
    floor = jnp.full(x.shape[:1], _NEG_INF)
    if config.min_p:
        floor = min_p_threshold(jnp.max(x, axis=-1), md.temperature, md.min_p)
    t = threshold_sorted(x, floor, md.top_k, md.top_p, md.temperature) if config.top_k or config.top_p else floor
    chosen = jnp.take_along_axis(x, tokens[:, None], axis=1)[:, 0]
    return jnp.where(chosen > _NEG_INF, jnp.minimum(t, chosen), t)


def processed_values(x: jax.Array, md: Any, config: Any, tokens: jax.Array) -> jax.Array:
    """The processed logits [S, V] f32 a row draws its token from: x [S, V] (after allowed / banned ids, bias,
    penalties) divided by the row's temperature (1 on greedy rows: ``SamplingMetadata``), -inf where min_p,
    top-k or top-p remove the token. tokens [S] i32: the sampled tokens (kept, see ``_keep_threshold``)."""
    if not config.random:  # every row greedy: temperature 1, no filter
        return x
    t = _keep_threshold(x, md, config, tokens)
    scaled = x / md.temperature[:, None]
    return scaled if t is None else jnp.where(x >= t[:, None], scaled, _NEG_INF)


def sample_logprobs(raw: jax.Array, x: jax.Array, md: Any, config: Any, tokens: jax.Array):
    """The logprob fields of a ``SamplerOutput`` under ``config.logprobs_mode``: raw [S, V] f32 the logits (after
    the grammar bitmask), x [S, V] the processed logits, tokens [S] i32 the emitted tokens -> ``token_logprobs``'s
    tuple with ``config.num_logprobs`` top entries."""
    processed, normalize = _mode(config.logprobs_mode)
    values = processed_values(x, md, config, tokens) if processed else raw
    return token_logprobs(values, tokens, config.num_logprobs, normalize=normalize)


def prompt_token_logprobs(logits: jax.Array, targets: jax.Array, k: int, mode: str):
    """Prompt logprobs under ``mode``: logits [N, V], targets [N] -> ``token_logprobs``'s tuple. Prompt tokens
    see no sampling parameter, so only the normalisation depends on the mode."""
    return token_logprobs(logits, targets, k, normalize=_mode(mode)[1])
