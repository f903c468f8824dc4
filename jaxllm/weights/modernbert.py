"""Strict loading of ModernBERT safetensors checkpoints into ``jaxllm.models.modernbert.ModernBertModel``.

Every HF key maps to one slot of our (stacked, [in, ...out]) parameters; a missing, unknown or duplicate key, or
a wrong shape, is an error naming it. A ``ModernBertForSequenceClassification`` checkpoint keeps the backbone
under ``model.`` and its head (``head.dense``, ``head.norm``, ``classifier``) apart: those are returned.
Biases exist only where the config has them (``norm_bias``, ``attention_bias``, ``mlp_bias``,
``classifier_bias``); the first layer has no ``attn_norm``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from flax import nnx

from jaxllm.models.modernbert import ModernBertConfig, ModernBertModel
from jaxllm.weights.bert import dummy_params, host_zeros, place, read_checkpoint


def _targets(cfg: ModernBertConfig) -> dict[str, tuple]:
    """HF key (without ``model.``) -> (our param, index into it, HF shape, HF array -> our slot)."""
    d, h, dh, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    t = {"embeddings.tok_embeddings.weight": ("word", (), (cfg.vocab_size, d), None)}

    def norm(key: str, name: str, index: tuple) -> None:
        t[f"{key}.weight"] = (name, (*index, 0), (d,), None)
        if cfg.norm_bias:
            t[f"{key}.bias"] = (name, (*index, 1), (d,), None)

    def linear(key: str, name: str, i: int, shape: tuple, to_ours, bias: bool, bias_shape: tuple) -> None:
        t[f"{key}.weight"] = (name, (i,), shape, to_ours)
        if bias:
            t[f"{key}.bias"] = (f"{name}_bias", (i,), (shape[0],), lambda b: b.reshape(bias_shape))

    norm("embeddings.norm", "embed_ln", ())
    norm("final_norm", "final_ln", ())
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        if i > 0:
            norm(p + "attn_norm", "attn_ln", (i,))
        norm(p + "mlp_norm", "mlp_ln", (i,))
        linear(p + "attn.Wqkv", "qkv", i, (3 * d, d), lambda w: w.T.reshape(d, 3, h, dh), cfg.attention_bias,
               (3, h, dh))
        linear(p + "attn.Wo", "o", i, (d, d), lambda w: w.T.reshape(h, dh, d), cfg.attention_bias, (d,))
        linear(p + "mlp.Wi", "wi", i, (2 * f, d), lambda w: w.T.reshape(d, 2, f), cfg.mlp_bias, (2, f))
        linear(p + "mlp.Wo", "wo", i, (d, f), lambda w: w.T, cfg.mlp_bias, (d,))
    return t


def head_shapes(cfg: ModernBertConfig, hf: dict[str, Any], num_labels: int) -> dict[str, tuple[int, ...]]:
    """HF keys and shapes of a ``ModernBertForSequenceClassification`` head (``num_labels`` > 0), else none."""
    if not num_labels:
        return {}
    d = cfg.hidden_size
    shapes = {"head.dense.weight": (d, d), "head.norm.weight": (d,), "classifier.weight": (num_labels, d),
              "classifier.bias": (num_labels,)}
    if hf.get("classifier_bias", False):
        shapes["head.dense.bias"] = (d,)
    if cfg.norm_bias:
        shapes["head.norm.bias"] = (d,)
    return shapes


def _abstract(cfg: ModernBertConfig):
    return nnx.eval_shape(lambda: ModernBertModel(cfg, rngs=nnx.Rngs(0)))


def load_modernbert(path: str | os.PathLike, cfg: ModernBertConfig, hf: dict[str, Any], mesh, num_labels: int = 0):
    """(model with the weights of the safetensors folder ``path``, replicated on ``mesh``; the classifier head's
    tensors {HF key: float32 array} of a ``ModernBertForSequenceClassification``, else None)."""
    model, targets = _abstract(cfg), _targets(cfg)
    host = host_zeros(model)
    head = read_checkpoint(path, targets, head_shapes(cfg, hf, num_labels), host, cfg.architecture,
                           lambda raw: raw.removeprefix("model.") if raw.removeprefix("model.") in targets else raw)
    return place(model, host, mesh), (head or None)


def dummy_modernbert(cfg: ModernBertConfig, hf: dict[str, Any], mesh, seed: int, num_labels: int = 0):
    """Random weights of the real shapes (``load_format="dummy"``, ``bert.dummy_params``); (model, head tensors
    or None) as ``load_modernbert``."""
    model = _abstract(cfg)
    rng = np.random.default_rng(seed)
    host = dummy_params(model, rng)
    head = {k: (np.ones(s, np.float32) if k == "head.norm.weight" else 0.02 * rng.standard_normal(s))
            for k, s in head_shapes(cfg, hf, num_labels).items()}
    return place(model, host, mesh), (head or None)
