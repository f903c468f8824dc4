"""Output objects of the pooling methods, as vLLM's ``vllm.outputs``.

``PoolingRequestOutput.outputs`` is a ``PoolingOutput`` whose ``data`` is a float32 numpy array (vLLM: a
torch tensor): [D] for an embedding, [L] for class probabilities, [] for a score, [T, D] / [T, L] for the
token-level tasks. The task-specific views convert it with ``from_base`` (``embedding`` / ``probs`` are lists
of floats, ``score`` a float).
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

import numpy as np


@dataclasses.dataclass
class PoolingOutput:
    data: np.ndarray
    # a 1-D ``data`` as Python floats, when a runner converted it while the device ran later batches
    # (``pooled_output``); the first ``from_base`` takes it instead of converting after the last batch
    _floats: list[float] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        """Equal data, element-wise (vLLM's rule; a dataclass' tuple comparison of arrays would raise)."""
        return isinstance(other, self.__class__) and bool(np.array_equal(self.data, other.data))

    __hash__ = None  # mutable, compared by value


def pooled_output(data: np.ndarray) -> PoolingOutput:
    """``PoolingOutput(data)`` with a vector's floats converted now: ``tolist`` of an embedding costs tens of
    microseconds, which the runners spend while the device is busy rather than all after the last batch."""
    out = PoolingOutput(data)
    if np.ndim(data) == 1:
        out._floats = data.tolist()
    return out


_O = TypeVar("_O")


class PoolingRequestOutput(Generic[_O]):
    """The result of one pooling request: ``outputs`` (the pooled data), ``prompt_token_ids`` (after
    truncation), ``num_cached_tokens`` (prompt tokens served from the prefix cache), ``finished`` (always True
    for the offline methods). The arguments are in vLLM's order."""

    def __init__(self, request_id: str, outputs: _O, prompt_token_ids: list[int], num_cached_tokens: int,
                 finished: bool) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.num_cached_tokens = num_cached_tokens
        self.finished = finished
        self.outputs = outputs

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(request_id={self.request_id!r}, outputs={self.outputs!r}, "
                f"prompt_token_ids={self.prompt_token_ids}, num_cached_tokens={self.num_cached_tokens}, "
                f"finished={self.finished})")


def _vector(pooling_output: PoolingOutput, what: str) -> list[float]:
    data = np.asarray(pooling_output.data)
    if data.ndim != 1:
        raise ValueError(f"pooled_data should be a 1-D {what}")
    floats, pooling_output._floats = pooling_output._floats, None  # handed over once: never shared
    return data.tolist() if floats is None else floats


@dataclasses.dataclass
class EmbeddingOutput:
    embedding: list[float]

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> EmbeddingOutput:
        return EmbeddingOutput(_vector(pooling_output, "embedding vector"))

    @property
    def hidden_size(self) -> int:
        return len(self.embedding)

    def __repr__(self) -> str:  # vLLM's: the size, not thousands of floats
        return f"EmbeddingOutput(hidden_size={self.hidden_size})"


@dataclasses.dataclass
class ClassificationOutput:
    probs: list[float]

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> ClassificationOutput:
        return ClassificationOutput(_vector(pooling_output, "probability vector"))

    @property
    def num_classes(self) -> int:
        return len(self.probs)

    def __repr__(self) -> str:
        return f"ClassificationOutput(num_classes={self.num_classes})"


@dataclasses.dataclass
class ScoringOutput:
    score: float

    @staticmethod
    def from_base(pooling_output: PoolingOutput) -> ScoringOutput:
        data = np.asarray(pooling_output.data)
        if data.ndim != 0:
            raise ValueError("pooled_data should be a scalar score")
        return ScoringOutput(float(data))


class EmbeddingRequestOutput(PoolingRequestOutput[EmbeddingOutput]):
    """``outputs.embedding``: the embedding as a list of floats."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput) -> EmbeddingRequestOutput:
        return EmbeddingRequestOutput(request_output.request_id, EmbeddingOutput.from_base(request_output.outputs),
                                      request_output.prompt_token_ids, request_output.num_cached_tokens,
                                    request_output.finished)


class ClassificationRequestOutput(PoolingRequestOutput[ClassificationOutput]):
    """``outputs.probs``: one probability (or raw score without activation) per label."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput) -> ClassificationRequestOutput:
        return ClassificationRequestOutput(request_output.request_id,
                                           ClassificationOutput.from_base(request_output.outputs),
                                           request_output.prompt_token_ids, request_output.num_cached_tokens,
                                           request_output.finished)


class ScoringRequestOutput(PoolingRequestOutput[ScoringOutput]):
    """``outputs.score``: the pair's score (cross-encoder) or cosine similarity (embedding model)."""

    @staticmethod
    def from_base(request_output: PoolingRequestOutput) -> ScoringRequestOutput:
        return ScoringRequestOutput(request_output.request_id, ScoringOutput.from_base(request_output.outputs),
                                    request_output.prompt_token_ids, request_output.num_cached_tokens,
                                    request_output.finished)
