"""sentence-transformers' files in a checkpoint folder, read as vLLM reads them: ``modules.json`` (its Pooling,
Dense and Normalize modules), ``1_Pooling/config.json`` (the pooling mode), ``2_Dense/config.json`` (projection
sizes) and ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``). Host-side, no weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

_ST_MODES = (("pooling_mode_lasttoken", "LAST"), ("pooling_mode_cls_token", "CLS"),
             ("pooling_mode_mean_tokens", "MEAN"))


def _st_modules(path: str) -> list[dict[str, Any]] | None:
    """The entries of sentence-transformers' ``modules.json`` in ``path``, or None without that file."""
    modules_path = os.path.join(path, "modules.json")
    if not os.path.isfile(modules_path):
        return None
    with open(modules_path) as f:
        return json.load(f)


def _pooling_entry(modules: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((m for m in modules if m.get("type", "").endswith("Pooling")), None)


def st_pooling_module(path: str) -> dict[str, Any] | None:
    """The Pooling entry of sentence-transformers' ``modules.json`` in ``path``, or None."""
    modules = _st_modules(path)
    return None if modules is None else _pooling_entry(modules)


def st_dense_modules(path: str) -> list[dict[str, Any]]:
    """The Dense entries of sentence-transformers' ``modules.json`` in ``path``, in order."""
    return [m for m in _st_modules(path) or [] if m.get("type", "").endswith(".Dense")]


def projected_size(path: str, hidden_size: int) -> int | None:
    """The embedding size after the checkpoint's Dense modules (None without any); ValueError when their
    ``in_features`` / ``out_features`` do not chain from ``hidden_size``."""
    size = None
    for module in st_dense_modules(path):
        cfg_path = os.path.join(path, module.get("path", ""), "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        expected = hidden_size if size is None else size
        if cfg.get("in_features") != expected:
            raise ValueError(f"{cfg_path}: in_features={cfg.get('in_features')} does not match the {expected} "
                             "features it receives")
        size = int(cfg["out_features"])
    return size


def sentence_transformers_pooling(path: str) -> tuple[str | None, bool]:
    """(pooling type or None, normalize default) from ``modules.json`` and its Pooling module's config."""
    modules = _st_modules(path)
    if modules is None:
        return None, True
    modules_path = os.path.join(path, "modules.json")
    types = [m.get("type", "") for m in modules]
    unsupported = [t for t in types if t.rsplit(".", 1)[-1] not in ("Transformer", "Pooling", "Dense",
                                                                     "Normalize")]
    if unsupported:
        raise ValueError(f"{modules_path}: sentence-transformers modules {unsupported} are not supported "
                         "(only Transformer, Pooling, Dense and Normalize)")
    normalize = any(t.endswith("Normalize") for t in types)
    pooling = _pooling_entry(modules)
    if pooling is None:  # vLLM reads the sentence-transformers pooling setup only with a Pooling module
        return None, True
    cfg_path = os.path.join(path, pooling.get("path", ""), "config.json")
    if not os.path.isfile(cfg_path):
        return None, normalize
    with open(cfg_path) as f:
        cfg = json.load(f)
    modes = [name for key, name in _ST_MODES if cfg.get(key)]
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in dict(_ST_MODES)]
    if others or len(modes) > 1:
        raise ValueError(f"{cfg_path}: pooling modes {others or modes} are not supported (one of "
                         "lasttoken, cls_token, mean_tokens)")
    return (modes[0] if modes else None), normalize


ST_TOKENIZER_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json",
                      "sentence_distilbert_config.json", "sentence_camembert_config.json",
                      "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                      "sentence_xlnet_config.json")


def sentence_transformers_tokenizer(path: str) -> dict[str, Any]:
    """``max_seq_length`` and ``do_lower_case`` from the first sentence-transformers tokenizer config in
    ``path`` that has both (vLLM's rule; one missing either is ignored), as ``PoolingModelInfo`` fields."""
    for name in ST_TOKENIZER_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        with open(file) as f:
            cfg = json.load(f)
        if cfg:
            if "max_seq_length" not in cfg or "do_lower_case" not in cfg:
                return {}
            length = cfg["max_seq_length"]
            if isinstance(length, bool) or not isinstance(length, int) or length < 1:
                raise ValueError(f"{file}: max_seq_length must be a positive int, got {length!r}")
            return {"max_seq_length": length, "do_lower_case": bool(cfg["do_lower_case"])}
    return {}
