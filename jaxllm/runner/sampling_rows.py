"""What one request's ``SamplingParams`` contributes to a row of the sampler's metadata, for
``sampling_metadata.build_sampling_metadata``.

A row's static part (temperature, filters, logit bias, allowed ids, bad words, penalties) is read and its
token ids checked against the vocabulary once per params object, cached by identity, as vLLM reads a
request's params once when it is added; the per-step part is the banned ids (min_tokens stops and the bad
words whose prefix ends the output so far).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxllm.engine.batch import ScheduledSeq
from jaxllm.runner.sampler_config import FILTER_CONFIG, SAMPLE_CONFIG, SamplerConfig, startup_configs
from jaxllm.sampling_params import SAMPLING_EPS


def _id_array(ids: Any, vocab_size: int, what: str) -> np.ndarray:
    arr = np.asarray(list(ids))
    if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= vocab_size):
        bad = [t for t in arr.tolist() if not isinstance(t, int) or not 0 <= t < vocab_size]
        raise ValueError(f"{what} contains token id(s) {bad[:8]}, outside the vocabulary [0, {vocab_size})")
    return arr.astype(np.int32)


_ROW_CACHE: dict[
    int, tuple
] = {}  # id(SamplingParams) -> (params, vocab_size, _static_row); params kept alive
_ROW_CACHE_MAX = 4096  # cleared when full


def cached_row(sp: Any, vocab_size: int) -> tuple:
    """``_static_row`` once per SamplingParams object, as vLLM reads a request's params once when it is added:
    params must not be mutated after submission."""
    hit = _ROW_CACHE.get(id(sp))
    if hit is not None and hit[0] is sp and hit[1] == vocab_size:
        return hit[2]
    row = _static_row(sp, vocab_size)
    if len(_ROW_CACHE) >= _ROW_CACHE_MAX:
        _ROW_CACHE.clear()
    _ROW_CACHE[id(sp)] = (sp, vocab_size, row)
    return row


def start_up_variant(sp: Any, vocab_size: int, logprobs_mode: str = "raw_logprobs") -> SamplerConfig:
    """The start-up variant (``SAMPLE_CONFIG``, ``FILTER_CONFIG`` or the logprobs variant of ``logprobs_mode``'s
    ``startup_configs``) that serves a row of ``sp`` whose sparse arrays fit the narrowest width and that has no
    penalties: which structured-outputs sampler a constrained request will need, known when it is added
    (``ModelRunner.prepare_structured_outputs``)."""
    _, _, top_k, top_p, min_p, _, _, _, _, wants_logprobs = cached_row(sp, vocab_size)
    if wants_logprobs:
        return next(c for c in startup_configs(logprobs_mode) if c.num_logprobs)
    return FILTER_CONFIG if min_p > 0.0 or top_k < vocab_size or top_p < 1.0 else SAMPLE_CONFIG


def _bad_words_ids(sp: Any) -> list[list[int]]:
    ids = getattr(sp, "bad_words_token_ids", None)
    if ids is None and getattr(sp, "bad_words", None):
        raise ValueError(f"bad_words={sp.bad_words!r} were not tokenized: bad_words_token_ids is missing")
    return [w for w in (ids or []) if len(w)]


def bad_words_banned_ids(
    bad_words_token_ids: Sequence[Sequence[int]], output_token_ids: Sequence[int]
) -> set[int]:
    """vLLM's bad-words rule: ban a word's last token when its preceding tokens end the output so far."""
    banned = set()
    for word in bad_words_token_ids:
        prefix = list(word[:-1])
        if len(prefix) > len(output_token_ids):
            continue
        if not prefix or list(output_token_ids[len(output_token_ids) - len(prefix) :]) == prefix:
            banned.add(int(word[-1]))
    return banned


def banned_ids(seq: ScheduledSeq, words: list, vocab_size: int) -> np.ndarray | None:
    """min_tokens ids (ScheduledSeq.banned_token_ids) plus the bad words whose prefix ends the output."""
    banned = set(seq.banned_token_ids)
    if words:
        tail = max(len(w) for w in words) - 1  # only the output's last tokens can match a prefix
        outputs = seq.token_ids[max(seq.num_prompt_tokens, len(seq.token_ids) - tail) :]
        banned |= bad_words_banned_ids(words, outputs)
    return _id_array(sorted(banned), vocab_size, "banned ids") if banned else None


def _float(sp: Any, name: str, default: float) -> float:
    value = getattr(sp, name, None)
    return default if value is None else float(value)


def _static_row(sp: Any, vocab_size: int) -> tuple:
    """What one SamplingParams contributes to a row: (temperature, greedy, top_k, top_p, min_p, logit_bias
    arrays, allowed ids, bad words, (repetition, frequency, presence), wants logprobs). Checks the vocabulary
    ids."""
    temperature = _float(sp, "temperature", 1.0)
    greedy = temperature < SAMPLING_EPS
    top_k = int(getattr(sp, "top_k", None) or 0)
    if top_k < -1:
        raise ValueError(f"top_k={top_k} must be -1, 0 (disabled) or a positive integer")
    num = getattr(sp, "logprobs", None)
    if num is not None and num < -1:  # the LLM's max_logprobs is checked when the request is added
        raise ValueError(f"logprobs={num} must be non-negative or -1 (the whole vocabulary)")
    bias, allowed = getattr(sp, "logit_bias", None), getattr(sp, "allowed_token_ids", None)
    words = _bad_words_ids(sp)
    for word in words:
        _id_array(word, vocab_size, "bad_words_token_ids")
    return (
        1.0 if greedy else temperature,
        greedy,
        vocab_size if greedy or top_k <= 0 else min(top_k, vocab_size),
        1.0 if greedy else _float(sp, "top_p", 1.0),
        0.0 if greedy else _float(sp, "min_p", 0.0),
        (_id_array(bias.keys(), vocab_size, "logit_bias"), np.asarray(list(bias.values()), np.float32))
        if bias
        else None,
        np.unique(_id_array(allowed, vocab_size, "allowed_token_ids")) if allowed else None,
        words,
        (
            _float(sp, "repetition_penalty", 1.0),
            _float(sp, "frequency_penalty", 0.0),
            _float(sp, "presence_penalty", 0.0),
        ),
        num is not None,
    )
