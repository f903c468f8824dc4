"""Host-side pooling: per-chunk accumulation and the task heads (numpy float32, no jax).

The device returns, per sequence and step, one [D] row chosen by the pooling type (the LAST new token's hidden
state, the CLS = first token's, or the SUM of the chunk's rows for MEAN) and, for token-level tasks, every new
token's row. ``PooledState`` combines the chunks of a long prompt; ``finish`` turns the pooled hidden state into
the task's output as vLLM's pooler heads do: embed = matryoshka truncation then L2 normalisation; classify /
score = the classifier head then its activation.
"""

from __future__ import annotations

import numpy as np

from jaxllm.pooling.config import PoolingModelInfo


class PooledState:
    """One sequence's partial pooling over the prompt chunks computed so far."""

    __slots__ = ("count", "first", "last", "rows", "total")

    def __init__(self) -> None:
        self.first: np.ndarray | None = None  # [D] the first token's row (CLS)
        self.last: np.ndarray | None = None  # [D] the latest chunk's last row (LAST)
        self.total: np.ndarray | None = None  # [D] sum of all rows so far (MEAN)
        self.count = 0
        self.rows: list[np.ndarray] = []  # token-level tasks: [n, D] per chunk

    def add(self, pooling_type: str, row: np.ndarray, num_tokens: int, token_rows: np.ndarray | None) -> None:
        """``row``: the device's [D] row for this chunk (LAST / CLS / SUM by ``pooling_type``)."""
        if pooling_type == "MEAN":
            self.total = row.copy() if self.total is None else self.total + row
        elif pooling_type == "CLS":
            if self.first is None:
                self.first = row.copy()
        else:
            self.last = row.copy()
        self.count += num_tokens
        if token_rows is not None:
            self.rows.append(np.array(token_rows, np.float32))

    def pooled(self, pooling_type: str) -> np.ndarray:
        if pooling_type == "MEAN":
            return self.total / max(self.count, 1)
        return self.first if pooling_type == "CLS" else self.last


def activation(name: str, logits: np.ndarray) -> np.ndarray:
    """softmax / sigmoid / identity / tanh over the last axis (float32)."""
    x = logits.astype(np.float32)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    return x


def embed_head(x: np.ndarray, params, projector=None) -> np.ndarray:
    """x [..., D] -> [..., dimensions]: sentence-transformers' Dense ``projector`` (when the model has one),
    matryoshka truncation, then L2 normalisation over the last axis when ``params.normalize``."""
    if projector is not None:
        x = projector(x)
    if params.dimensions is not None:
        x = x[..., :params.dimensions]
    if params.normalize:
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        x = x / np.maximum(norm, 1e-12)
    return x.astype(np.float32)


def classify_head(x: np.ndarray, head, act: str, params, logit_bias: float | None = None) -> np.ndarray:
    """x [..., D] -> [..., L] through ``head`` (jaxllm.pooling.heads; None: the rows themselves, a converted
    reward model's), less ``logit_bias`` (pooler_config's), with the activation ``act`` when
    ``params.use_activation``."""
    logits = x if head is None else head(x)
    if logit_bias is not None:
        logits = logits - np.float32(logit_bias)
    return activation(act, logits) if params.use_activation else logits


def finish(info: PoolingModelInfo, head, state: PooledState, params) -> np.ndarray:
    """The task output of one sequence: embed [d], classify [L], score [] , token_embed [T, d],
    token_classify [T, L]. ``head``: a classifier's head, or an embedding model's Dense projector (or None)."""
    task = params.task
    if task == "token_embed":
        return embed_head(np.concatenate(state.rows), params, head)
    if task == "token_classify":
        return classify_head(np.concatenate(state.rows), getattr(head, "token_head", head),
                             info.classify_activation, params, info.logit_bias)
    pooled = state.pooled(info.pooling_type)
    if task == "embed":
        return embed_head(pooled, params, head)
    if task == "classify":
        return classify_head(pooled, head, info.classify_activation, params, info.logit_bias)
    return classify_head(pooled, head, info.score_activation, params, info.logit_bias).reshape(())  # score: one label
