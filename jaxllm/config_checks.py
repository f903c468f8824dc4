"""Checks of a config.json before anything reads it: ``check_hf_config`` refuses missing, non-positive or absurd
size fields (a zero head count would divide by zero, a million layers plan for minutes), ``check_field_kinds``
other fields of the wrong kind. A bad field is a ValueError naming the file and the key, not Python's
AttributeError / TypeError from deep inside ``ModelConfig.from_hf``, nor a model that silently computes NaN
(a negative norm epsilon) or reads a truthy string as True."""

from __future__ import annotations

import math
from typing import Any

from jaxllm.config_classic import classic_hf
from jaxllm.config_deepseek import deepseek_arch, deepseek_hf
from jaxllm.config_dense import dense_hf
from jaxllm.config_families import TEXT_OF_MULTIMODAL, text_config_of_multimodal
from jaxllm.config_moe_families import moe_family_hf

_POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "norm_eps", "rope_theta")
_BOOLS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "qkv_bias", "use_bias", "use_qk_norm")
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


# config.json fields that size the model: each must be a positive int where present (required ones marked True)
_SIZE_FIELDS = {"vocab_size": True, "hidden_size": True, "num_hidden_layers": True, "num_attention_heads": True,
                "intermediate_size": False, "num_key_value_heads": False, "head_dim": False,
                "max_position_embeddings": False}
_MAX_LAYERS = 4096  # far above any released model; a larger count is a corrupted config


def check_hf_config(hf: dict[str, Any], where: str) -> None:
    """Reject a config.json whose size fields are missing, not positive ints, or absurd, naming the key (before
    anything is sized from it: a zero head count would divide by zero, a million layers plan for minutes). A
    multimodal checkpoint's text config is checked, and the kinds of the other fields (``config_checks``)."""
    check_field_kinds(hf, where)
    hf = dense_hf(moe_family_hf(classic_hf(hf)))  # (GPT-2's n_embd / n_layer, DBRX's d_model / ...: the shared names)
    hf = deepseek_hf(hf, deepseek_arch(hf))  # (MLA: one cache head per head, whatever num_key_value_heads says)
    if (hf.get("architectures") or [None])[0] in TEXT_OF_MULTIMODAL:
        hf = text_config_of_multimodal(hf)
        check_field_kinds(hf, where)
    for key, required in _SIZE_FIELDS.items():
        if key not in hf or hf[key] is None:
            if required:
                raise ValueError(f"{where}: the model config has no {key!r}")
            continue
        value = hf[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {key}={value!r} must be a positive integer")
    if hf["num_hidden_layers"] > _MAX_LAYERS:
        raise ValueError(f"{where}: num_hidden_layers={hf['num_hidden_layers']} is not plausible "
                         f"(at most {_MAX_LAYERS})")
    kv = hf.get("num_key_value_heads") or hf["num_attention_heads"]
    if hf["num_attention_heads"] % kv:
        raise ValueError(f"{where}: num_attention_heads={hf['num_attention_heads']} is not a multiple of "
                         f"num_key_value_heads={kv}")
    if not hf.get("head_dim") and hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError(f"{where}: hidden_size={hf['hidden_size']} is not a multiple of num_attention_heads="
                         f"{hf['num_attention_heads']} and no head_dim is given")
