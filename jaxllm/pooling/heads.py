"""Classifier heads of pooling models, applied on the host to pooled hidden states (numpy float32).

Each maps x [..., D] to logits [..., L]: the decoders' ``score`` linear layer (no bias), BERT's pooler
(dense + tanh) then ``classifier``, RoBERTa / XLM-R's ``classifier.dense`` + tanh then ``classifier.out_proj``.
They run once per finished request on a [D] row (or [T, D] for token-level tasks), so the host is fast enough
and the device programs stay the backbone's.
"""

from __future__ import annotations

import json
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
    """logits = out(tanh(dense(x))): BERT's pooler + classifier, RoBERTa's classification head.

    ``token_head`` is what a per-token task ("token_classify") applies to every token's row: the whole head for
    RoBERTa, the classifier alone for BERT (its pooler belongs to the CLS row), as vLLM."""

    def __init__(self, dense: LinearHead, out: LinearHead, dense_per_token: bool = True):
        self.dense, self.out = dense, out
        self.token_head = self if dense_per_token else out

    @property
    def num_labels(self) -> int:
        return self.out.num_labels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.out(np.tanh(self.dense(x)))


# HF key names of the encoder cross-encoders' heads (after the backbone prefix is removed), by head layout
BERT_HEAD_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")
ROBERTA_HEAD_KEYS = ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                     "classifier.out_proj.bias")


def encoder_head(architecture: str, tensors: dict[str, np.ndarray]) -> TanhDenseHead:
    """The head of a ``{Bert,Roberta,XLMRoberta}ForSequenceClassification`` from its checkpoint tensors."""
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
