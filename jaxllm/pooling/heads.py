"""Classifier heads of pooling models, applied on the host to pooled hidden states (numpy float32).

Each maps x [..., D] to logits [..., L]: the decoders' ``score`` linear layer (no bias), BERT's pooler
(dense + tanh) then ``classifier``, RoBERTa / XLM-R's ``classifier.dense`` + tanh then ``classifier.out_proj``.
They run once per finished request on a [D] row (or [T, D] for token-level tasks), so the host is fast enough
and the device programs stay the backbone's.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np


class LinearHead:
    """logits = x W^T (+ b)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None):
        self.weight = np.asarray(weight, np.float32)  # [L, D]
        self.bias = None if bias is None else np.asarray(bias, np.float32)

    @property
    def num_labels(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32) @ self.weight.T
        return out if self.bias is None else out + self.bias


class TanhDenseHead:
    """logits = out(act(dense(x))), act tanh: BERT's pooler + classifier, RoBERTa's classification head (relu:
    Qwen2ForRewardModel's ``score`` MLP).

    ``token_head`` is what a per-token task ("token_classify") applies to every token's row: the whole head for
    RoBERTa, the classifier alone for BERT (its pooler belongs to the CLS row), as vLLM."""

    def __init__(self, dense: LinearHead, out: LinearHead, dense_per_token: bool = True, act=np.tanh):
        self.dense, self.out, self.act = dense, out, act
        self.token_head = self if dense_per_token else out

    @property
    def num_labels(self) -> int:
        return self.out.num_labels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.out(self.act(self.dense(x)))


_ERF = np.vectorize(math.erf, otypes=[np.float64])
# transformers' activations of ModernBERT's prediction head (``classifier_activation``) on numpy float32
_HEAD_ACTIVATIONS = {
    "gelu": lambda x: (0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)))).astype(np.float32),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}
_HEAD_ACTIVATIONS["gelu_pytorch_tanh"] = _HEAD_ACTIVATIONS["gelu_new"]


class ModernBertHead:
    """ModernBERT's classifier: logits = classifier(LayerNorm(act(dense(x)))), on every row it is given (the
    pooled row, or each token's for "token_classify")."""

    def __init__(self, tensors: dict[str, np.ndarray], activation: str, eps: float):
        if activation not in _HEAD_ACTIVATIONS:
            raise ValueError(f"classifier_activation={activation!r} is not supported; supported: "
                             f"{sorted(_HEAD_ACTIVATIONS)}")
        self.dense = LinearHead(tensors["head.dense.weight"], tensors.get("head.dense.bias"))
        self.out = LinearHead(tensors["classifier.weight"], tensors["classifier.bias"])
        self.norm_weight, self.norm_bias = tensors["head.norm.weight"], tensors.get("head.norm.bias")
        self.act, self.eps = _HEAD_ACTIVATIONS[activation], eps
        self.token_head = self

    @property
    def num_labels(self) -> int:
        return self.out.num_labels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.act(self.dense(x))
        y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + self.eps) * self.norm_weight
        return self.out(y if self.norm_bias is None else y + self.norm_bias)


def reward_head(tensors: dict[str, np.ndarray]) -> TanhDenseHead:
    """Qwen2ForRewardModel's ``score``: Linear(D, D) -> ReLU -> Linear(D, L), both with biases, on every token."""
    return TanhDenseHead(LinearHead(tensors["score.0.weight"], tensors["score.0.bias"]),
                         LinearHead(tensors["score.2.weight"], tensors["score.2.bias"]),
                         act=lambda x: np.maximum(x, 0.0))


# HF key names of the encoder cross-encoders' heads (after the backbone prefix is removed), by head layout
BERT_HEAD_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")
ROBERTA_HEAD_KEYS = ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                     "classifier.out_proj.bias")


def encoder_head(architecture: str, tensors: dict[str, np.ndarray], hf: dict | None = None):
    """The head of a ``{Bert,Roberta,XLMRoberta,ModernBert}ForSequenceClassification`` from its checkpoint
    tensors (``hf``: config.json, for ModernBERT's ``classifier_activation`` and ``norm_eps``)."""
    if architecture.startswith("ModernBert"):
        hf = hf or {}
        return ModernBertHead(tensors, hf.get("classifier_activation", "gelu"), float(hf.get("norm_eps", 1e-5)))
    bert = architecture.startswith("Bert")
    dw, db, ow, ob = (tensors[k] for k in (BERT_HEAD_KEYS if bert else ROBERTA_HEAD_KEYS))
    return TanhDenseHead(LinearHead(dw, db), LinearHead(ow, ob), dense_per_token=not bert)


# sentence-transformers Dense activations (torch.nn.modules.* names, lower-cased last part) on numpy
_DENSE_ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
}


class DenseProjector:
    """sentence-transformers' Dense modules after pooling: x [..., D] -> [..., E], each layer
    ``act(x W^T + b)`` in ``modules.json`` order (vLLM applies them before matryoshka truncation and
    normalisation)."""

    def __init__(self, layers: list[tuple[LinearHead, str]]):
        self.layers = layers

    @property
    def out_features(self) -> int:
        return self.layers[-1][0].num_labels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for linear, act in self.layers:
            x = _DENSE_ACTIVATIONS[act](linear(x))
        return x


def dense_activation(name: str | None, where: str) -> str:
    """The short name of a Dense module's ``activation_function`` (None: identity); ValueError naming it
    when it is not one of ``_DENSE_ACTIVATIONS``."""
    short = (name or "identity").rsplit(".", 1)[-1].lower()
    if short not in _DENSE_ACTIVATIONS:
        raise ValueError(f"{where}: activation_function {name!r} is not supported; supported: "
                         f"{sorted(_DENSE_ACTIVATIONS)}")
    return short


def load_dense_projector(path: str, modules: list[dict]) -> DenseProjector | None:
    """The Dense modules ``modules`` (entries of ``modules.json``) of the checkpoint at ``path``, their
    weights read from each folder's ``model.safetensors`` (``linear.weight`` / ``linear.bias``, strict); None
    when there are none."""
    from safetensors.numpy import load_file

    layers = []
    for module in modules:
        folder = os.path.join(path, module.get("path", ""))
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        file = os.path.join(folder, "model.safetensors")
        if not os.path.isfile(file):
            raise ValueError(f"{folder}: sentence-transformers Dense module without model.safetensors")
        tensors = load_file(file)
        want = {"linear.weight"} | ({"linear.bias"} if cfg.get("bias", True) else set())
        if set(tensors) != want:
            raise ValueError(f"{file}: expected tensors {sorted(want)}, got {sorted(tensors)}")
        weight = tensors["linear.weight"]
        if weight.shape != (cfg["out_features"], cfg["in_features"]):
            raise ValueError(f"{file}: linear.weight has shape {weight.shape}, config.json says "
                             f"({cfg['out_features']}, {cfg['in_features']})")
        act = dense_activation(cfg.get("activation_function"), os.path.join(folder, "config.json"))
        layers.append((LinearHead(weight, tensors.get("linear.bias")), act))
    return DenseProjector(layers) if layers else None
