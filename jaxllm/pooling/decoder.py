"""Decoder pooling models: the Llama-family backbone of a ``*ForCausalLM`` / ``*Model`` /
``*ForSequenceClassification`` checkpoint, plus the classifier head ``score.weight`` [L, D] when it has one.

The backbone is the generate path's ``LlamaForCausalLM`` built with tied embeddings, so it has no ``lm_head``
(pooling never projects to the vocabulary; a checkpoint's ``lm_head.weight`` is skipped). ``*Model``
checkpoints (Qwen3-Embedding style) store the backbone without the ``model.`` prefix; it is added here so the
generate path's strict key map applies unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.pooling.config import DECODER_BACKBONES, PoolingModelInfo
from jaxllm.pooling.heads import LinearHead

HEAD_KEY = "score.weight"


def backbone_config(hf: dict[str, Any], dtype: Any, quantization: str | None) -> ModelConfig:
    """The ModelConfig of a pooling checkpoint's decoder backbone (its causal-LM family, tied, no lm_head)."""
    base = DECODER_BACKBONES[hf["architectures"][0]]
    cfg = ModelConfig.from_hf({**hf, "architectures": [base]}, dtype=dtype, quantization=quantization)
    return dataclasses.replace(cfg, tie_word_embeddings=True)


def _renamed(tensors, head: dict[str, np.ndarray], want_head: bool, token_ids: list[int] | None = None):
    """The checkpoint's tensors with the backbone under ``model.``; the head is taken out into ``head``. With
    ``token_ids`` (a classifier built from the LM head), the rows of ``lm_head.weight`` and of the input
    embeddings (the LM head of a tied checkpoint) at those ids are kept too."""
    for name, array, source in tensors:
        if name == HEAD_KEY and want_head:
            head[name] = np.array(array, np.float32)
            continue
        if token_ids is not None and name.removeprefix("model.") in ("lm_head.weight", "embed_tokens.weight"):
            head[name.removeprefix("model.")] = np.asarray(array)[token_ids].astype(np.float32)
        if name != "lm_head.weight" and not name.startswith("model."):
            name = "model." + name
        yield name, array, source


def load_decoder(path: str, cfg: ModelConfig, info: PoolingModelInfo, mesh, load_format: str, seed: int,
                 token_ids: list[int] | None = None):
    """(backbone model, ``LinearHead`` of ``score.weight`` [L, D] or None). ``load_format="dummy"``: random
    weights. ``token_ids``: the ids of ``info.classifier_from_token``, whose LM-head rows make the head."""
    from jaxllm.weights.gguf import is_gguf
    from jaxllm.weights.loader import (
        WeightLoadError,
        _tensor_source,
        build_dummy_model,
        build_model_from_tensors,
    )

    want_head = info.num_labels > 0
    if load_format == "dummy":
        head = None
        if want_head:
            head = (0.02 * np.random.default_rng(seed).standard_normal((info.num_labels, cfg.hidden_size)))
        return build_dummy_model(cfg, mesh, seed), None if head is None else LinearHead(head)
    gguf = is_gguf(path)
    if load_format in ("gguf", "safetensors") and gguf != (load_format == "gguf"):
        raise ValueError(f"load_format={load_format!r} but {path!r} is {'' if gguf else 'not '}a GGUF file")
    found: dict[str, np.ndarray] = {}
    _, tensors = _tensor_source(path)  # a safetensors folder or a GGUF file, in HF names
    model = build_model_from_tensors(cfg, _renamed(tensors, found, want_head, token_ids), mesh)
    if not want_head:
        return model, None
    if token_ids is not None:
        return model, LinearHead(_head_from_tokens(found, info))
    head = found.get(HEAD_KEY)
    if head is None:
        raise WeightLoadError(f"checkpoint is missing the classifier head {HEAD_KEY!r} for {info.architecture}")
    if head.shape != (info.num_labels, cfg.hidden_size):
        raise WeightLoadError(f"shape mismatch for {HEAD_KEY!r}: expected {(info.num_labels, cfg.hidden_size)}, "
                              f"got {head.shape}")
    return model, LinearHead(head)


def _head_from_tokens(found: dict[str, np.ndarray], info: PoolingModelInfo) -> np.ndarray:
    """The classifier [L, D] from the LM-head rows of the classifier tokens (vLLM's conversions): one label
    ``yes - no`` for "from_2_way_softmax" (sigmoid of it = the 2-way softmax's "yes"), else the rows as they are."""
    from jaxllm.weights.loader import WeightLoadError

    rows = found.get("lm_head.weight", found.get("embed_tokens.weight"))
    if rows is None:
        raise WeightLoadError(f"checkpoint has neither 'lm_head.weight' nor input embeddings to build the "
                              f"{info.architecture} head from classifier_from_token")
    return rows[1:2] - rows[0:1] if info.num_labels == 1 and len(rows) == 2 else rows
