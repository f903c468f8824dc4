"""Type and range checks of user-given sampling values (SamplingParams, BeamSearchParams): each field check returns
the normalized value, and ``check_ranges`` the cross-field rules of a whole ``SamplingParams``; all raise a
TypeError / ValueError naming the field and the offending value, in vLLM's words. They live apart from the
parameter classes so those read as their fields and defaults."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


class WrongTypeError(TypeError, ValueError):
    """A sampling value of the wrong type: a TypeError by Python's convention, and a ValueError as vLLM raises
    for some fields (its ``VLLMValidationError`` for ``n=1.5`` or ``top_k=1.5`` is a ValueError)."""


def check_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        kind = "an int or None" if optional else "an int"
        raise WrongTypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    return int(value)


def check_float(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise WrongTypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise WrongTypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return bool(value)


def check_token_ids(name: str, value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise WrongTypeError(f"{name} must be a list of ints, got {type(value).__name__} ({value!r})")
    ids = list(value)
    for t in ids:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
            raise WrongTypeError(f"{name} must contain only integers, got {ids}.")
        if t < 0:
            raise ValueError(f"{name} must contain only non-negative token ids, got {ids}.")
    return [int(t) for t in ids]


def check_unicode(where: str, text: str) -> None:
    """Reject text no tokenizer can encode (a lone UTF-16 surrogate such as '\\ud800'), naming ``where``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where} is not valid Unicode text: {text[e.start:e.end]!r} at position {e.start} is "
                         "a lone surrogate") from None


def check_strs(name: str, value: Any, *, unique: bool = True) -> list[str]:
    """A str or a list of str as a list; ``unique``: without duplicates, first occurrences kept (vLLM dedupes
    ``bad_words`` but keeps ``stop`` as given)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list of str, got {type(value).__name__} ({value!r})")
    for s in value:
        if not isinstance(s, str):
            raise TypeError(f"{name} must contain only strings, got {value!r}")
        check_unicode(name, s)
    return list(dict.fromkeys(value)) if unique else list(value)


def check_logit_bias(value: Any) -> dict[int, float] | None:
    """``logit_bias`` as {token id: bias}: keys are ints, numpy ints or digit strings (as OpenAI-style clients
    send), biases finite or infinite numbers, never NaN."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"logit_bias must be a dict of token id -> float, got {type(value).__name__}")
    out: dict[int, float] = {}
    bad_keys = []
    for k, v in value.items():
        tid = _token_id_key(k)
        if tid is None:
            bad_keys.append(k)
            continue
        bias = check_float(f"logit_bias[{k!r}]", v)
        if math.isnan(bias):
            raise ValueError(f"logit_bias[{k!r}] must not be NaN.")
        out[tid] = bias
    if bad_keys:
        raise ValueError(
            f"logit_bias contains key(s) that are not non-negative integer token IDs: {bad_keys!r}"
        )
    return out


def _token_id_key(key: Any) -> int | None:
    """A logit_bias key as a token id (ints, numpy ints and digit strings, as OpenAI-style clients send); None
    when it is not a non-negative integer."""
    if isinstance(key, (bool, np.bool_, float)):
        return None
    try:
        tid = int(key)
    except (TypeError, ValueError):
        return None
    return tid if tid >= 0 else None


def check_ranges(p: Any) -> None:
    """The ranges and cross-field rules of a ``SamplingParams`` whose fields are already type-checked and
    normalized (vLLM's ``_verify_args``, with its messages)."""
    if p.n < 1:
        raise ValueError(f"n must be at least 1, got {p.n}.")
    if not -2.0 <= p.presence_penalty <= 2.0:
        raise ValueError(f"presence_penalty must be in [-2, 2], got {p.presence_penalty}.")
    if not -2.0 <= p.frequency_penalty <= 2.0:
        raise ValueError(f"frequency_penalty must be in [-2, 2], got {p.frequency_penalty}.")
    if not math.isfinite(p.repetition_penalty):
        raise ValueError(f"repetition_penalty must be a finite number, got {p.repetition_penalty}.")
    if p.repetition_penalty <= 0.0:
        raise ValueError(f"repetition_penalty must be greater than zero, got {p.repetition_penalty}.")
    if not math.isfinite(p.temperature):
        raise ValueError(f"temperature must be a finite number, got {p.temperature}.")
    if p.temperature < 0.0:
        raise ValueError(f"temperature must be non-negative, got {p.temperature}.")
    if p.temperature > 2.0:
        raise ValueError(f"temperature must be in [0, 2], got {p.temperature}.")
    if not 0.0 < p.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p.top_p}.")
    if p.top_k < -1:  # -1 is quietly accepted as "off", as vLLM does
        raise ValueError(f"top_k must be 0 (disable), or at least 1, got {p.top_k}.")
    if not 0.0 <= p.min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {p.min_p}.")
    if p.max_tokens is not None and p.max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {p.max_tokens}.")
    if p.min_tokens < 0:
        raise ValueError(f"min_tokens must be greater than or equal to 0, got {p.min_tokens}.")
    if p.max_tokens is not None and p.min_tokens > p.max_tokens:
        raise ValueError(
            f"min_tokens must be less than or equal to max_tokens={p.max_tokens}, "
            f"got {p.min_tokens}."
        )
    if any(not s for s in p.stop):
        raise ValueError("stop cannot contain an empty string.")
    if p.stop and not p.detokenize:
        raise ValueError(
            "stop strings are only supported when detokenize is True. Set detokenize=True to use stop."
        )
    if any(not w for w in p.bad_words):
        raise ValueError(f"bad_words cannot contain an empty string. Got bad_words={p.bad_words}")
    if p.allowed_token_ids and p.logit_bias and all(
            p.logit_bias.get(t) == -math.inf for t in p.allowed_token_ids):
        raise ValueError(f"no token can be sampled: every id in allowed_token_ids={p.allowed_token_ids} has "
                         "logit_bias -inf")
    if p.allowed_token_ids is not None and len(p.allowed_token_ids) == 0:
        raise ValueError("allowed_token_ids is not None and empty!")
    if p.stream_interval is not None and p.stream_interval < 1:
        raise ValueError(f"stream_interval must be at least 1, got {p.stream_interval}.")
    k = p.truncate_prompt_tokens
    if k is not None and (k == 0 or k < -1):
        raise ValueError(f"truncate_prompt_tokens has to be a positive integer or -1, got {k}")
