"""The kinds of config.json's non-size fields, checked before anything reads them (``config.check_hf_config``
checks the size fields): a field of the wrong kind is a ValueError naming the file and the key, not Python's
AttributeError / TypeError from deep inside ``ModelConfig.from_hf``, nor a model that silently computes NaN
(a negative norm epsilon) or reads a truthy string as True."""

from __future__ import annotations

import math
from typing import Any

_POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "norm_eps", "rope_theta")
_BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias")
_TOKEN_IDS = ("eos_token_id", "bos_token_id")  # (pad_token_id: -1 in some released configs, unused here)
_DICTS = ("rope_scaling", "rope_parameters", "quantization_config")


def check_field_kinds(hf: dict[str, Any], where: str) -> None:
    """``hf``: config.json's dict; ``where``: the file, for the messages. Absent fields are fine, and null ones
    except the numbers."""
    archs = hf.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise ValueError(f"{where}: architectures={archs!r} must be a list of class names (strings)")
    for key in _POSITIVE_FLOATS:  # (an explicit null too: there is no default to fall back on)
        value = hf.get(key)
        if key in hf and not _positive_number(value):
            raise ValueError(f"{where}: {key}={value!r} must be a positive finite number")
    for key in _BOOLS:
        value = hf.get(key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{where}: {key}={value!r} must be true or false")
    for key in _TOKEN_IDS:
        value = hf.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(_token_id(t) for t in ids):
            raise ValueError(f"{where}: {key}={value!r} must be a token id (a non-negative integer) or a list "
                             "of them")
    for key in _DICTS:
        value = hf.get(key)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}: {key}={value!r} must be a JSON object")


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
