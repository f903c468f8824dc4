"""Classifier heads of pooling models, applied on the host to pooled hidden states (numpy float32).

Each maps x [..., D] to logits [..., L]: the decoders' ``score`` linear layer (no bias), BERT's pooler
(dense + tanh) then ``classifier``, RoBERTa / XLM-R's ``classifier.dense`` + tanh then ``classifier.out_proj``.
They run once per finished request on a [D] row (or [T, D] for token-level tasks), so the host is fast enough
and the device programs stay the backbone's.
"""

from __future__ import annotations

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
    """logits = out(tanh(dense(x))): BERT's pooler + classifier, RoBERTa's classification head."""

    def __init__(self, dense: LinearHead, out: LinearHead):
        self.dense, self.out = dense, out

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
    keys = BERT_HEAD_KEYS if architecture.startswith("Bert") else ROBERTA_HEAD_KEYS
    dw, db, ow, ob = (tensors[k] for k in keys)
    return TanhDenseHead(LinearHead(dw, db), LinearHead(ow, ob))
