"""Type and range checks of user-given sampling values (SamplingParams, BeamSearchParams): each returns the
normalized value or raises a TypeError / ValueError naming the field and the offending value, in vLLM's words."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def check_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    return int(value)


def check_float(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return bool(value)


def check_token_ids(name: str, value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__} ({value!r})")
    ids = list(value)
    for t in ids:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{name} must contain only integers, got {ids}.")
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


def check_strs(name: str, value: Any) -> list[str]:
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
    return list(dict.fromkeys(value))  # drop duplicates, keep order (as vLLM)
