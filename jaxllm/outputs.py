"""Output objects of ``LLM.generate``, as in vLLM: ``RequestOutput`` holds one ``CompletionOutput`` per
sample (``SamplingParams.n``); logprobs are lists of ``{token_id: Logprob}`` dicts, one per token."""

from __future__ import annotations

import dataclasses
from collections.abc import MutableSequence
from typing import Any

# vLLM's ``vllm.outputs`` holds the pooling outputs too; jaxllm keeps them beside the pooling code.
from jaxllm.pooling.outputs import (
    ClassificationOutput,
    ClassificationRequestOutput,
    EmbeddingOutput,
    EmbeddingRequestOutput,
    PoolingOutput,
    PoolingRequestOutput,
    ScoringOutput,
    ScoringRequestOutput,
)

__all__ = ["ClassificationOutput", "ClassificationRequestOutput", "CompletionOutput", "EmbeddingOutput",
           "EmbeddingRequestOutput", "FlatLogprobs", "Logprob", "PoolingOutput", "PoolingRequestOutput",
           "PromptLogprobs", "RequestMetrics", "RequestOutput", "SampleLogprobs", "ScoringOutput",
           "ScoringRequestOutput"]


@dataclasses.dataclass
class Logprob:
    """Log probability of one token. ``rank`` is 1 for the most likely token; ``decoded_token`` is the
    token's text on its own (``tokenizer.decode([token_id])``), None without detokenization."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# One dict per generated token: the sampled token plus the top-``logprobs`` tokens.
SampleLogprobs = list[dict[int, Logprob]]
# One entry per prompt token; the first is None (nothing predicts the first token).
PromptLogprobs = list[dict[int, Logprob] | None]


@dataclasses.dataclass
class CompletionOutput:
    """One generated sequence of a request.

    ``token_ids`` include a final EOS / stop token (as vLLM); ``text`` excludes it, and excludes a matched
    stop string unless ``include_stop_str_in_output``. ``cumulative_logprob`` and ``logprobs`` are None
    unless ``SamplingParams.logprobs`` was set. ``finish_reason`` is "stop" or "length" (None while
    unfinished), or "error" when the model's logits held NaN / +inf or left no token to sample (vLLM's
    FinishReason.ERROR; the tokens before it are kept); ``stop_reason`` is the stop string or stop token id that
    ended it, None for EOS/length."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: SampleLogprobs | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None  # the jaxllm.lora.LoRARequest it was generated with, or None
    # Parameters of a remote KV transfer (vLLM's disaggregated prefill); jaxllm has no KV connector, so the engine
    # leaves it None. ``RequestOutput.kv_transfer_params`` reads it.
    kv_transfer_params: dict[str, Any] | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None

    def __repr__(self) -> str:
        return (
            f"CompletionOutput(index={self.index}, text={self.text!r}, token_ids={self.token_ids}, "
            f"cumulative_logprob={self.cumulative_logprob}, logprobs={self.logprobs}, "
            f"finish_reason={self.finish_reason}, stop_reason={self.stop_reason})"
        )


@dataclasses.dataclass
class RequestMetrics:
    """Wall-clock times (``time.time()`` seconds) of a request's life; None until the event happened."""

    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None

    @property
    def time_in_queue(self) -> float | None:
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time


class RequestOutput:
    """The result of one request: ``outputs`` has one CompletionOutput per sample, ordered by index.

    The constructor takes vLLM's arguments in vLLM's order. ``num_cached_tokens`` is the number of prompt
    tokens served from the prefix cache (of the first sample), ``prompt_logprobs`` is None unless
    ``SamplingParams.prompt_logprobs`` was set. ``encoder_prompt`` / ``encoder_prompt_token_ids`` are None: every
    model jaxllm serves is decoder-only."""

    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: PromptLogprobs | None,
        outputs: list[CompletionOutput],
        finished: bool,
        metrics: RequestMetrics | None = None,
        lora_request: Any = None,
        encoder_prompt: str | None = None,
        encoder_prompt_token_ids: list[int] | None = None,
        num_cached_tokens: int | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.metrics = metrics
        self.lora_request = lora_request  # the jaxllm.lora.LoRARequest the request ran with, or None
        self.encoder_prompt = encoder_prompt
        self.encoder_prompt_token_ids = encoder_prompt_token_ids
        self.num_cached_tokens = num_cached_tokens

    @property
    def kv_transfer_params(self) -> dict[str, Any] | list[dict[str, Any]] | None:
        """The outputs' ``kv_transfer_params``: the one dict of a single output, a list for several, else None."""
        params = [c.kv_transfer_params for c in self.outputs if c.kv_transfer_params]
        if len(params) == 1:
            return params[0]
        return params or None

    def add(self, next_output: RequestOutput, aggregate: bool) -> None:
        """Merge a later output of the same request into this one (vLLM's streaming helper): with ``aggregate``
        a DELTA output's text, token ids and logprobs are appended to the output of the same index, otherwise
        that output is replaced; an index not seen yet is appended."""
        self.finished |= next_output.finished
        for new in next_output.outputs:
            old = next((i for i, c in enumerate(self.outputs) if c.index == new.index), None)
            if old is None:
                self.outputs.append(new)
            elif not aggregate:
                self.outputs[old] = new
            else:
                _extend(self.outputs[old], new)

    def __repr__(self) -> str:
        return (
            f"RequestOutput(request_id={self.request_id}, prompt={self.prompt!r}, "
            f"prompt_token_ids={self.prompt_token_ids}, encoder_prompt={self.encoder_prompt!r}, "
            f"encoder_prompt_token_ids={self.encoder_prompt_token_ids}, prompt_logprobs={self.prompt_logprobs}, "
            f"outputs={self.outputs}, finished={self.finished}, metrics={self.metrics}, "
            f"lora_request={self.lora_request}, num_cached_tokens={self.num_cached_tokens}, "
            f"kv_transfer_params={self.kv_transfer_params})"
        )


def _extend(completion: CompletionOutput, delta: CompletionOutput) -> None:
    """Append a DELTA completion to the accumulated one of the same index (``RequestOutput.add``)."""
    completion.text += delta.text
    completion.token_ids = list(completion.token_ids) + list(delta.token_ids)
    if delta.logprobs:
        if completion.logprobs is None:
            completion.logprobs = delta.logprobs[:]
        else:
            completion.logprobs.extend(delta.logprobs)  # a list or a FlatLogprobs
    completion.cumulative_logprob = delta.cumulative_logprob
    completion.finish_reason, completion.stop_reason = delta.finish_reason, delta.stop_reason
    completion.kv_transfer_params = delta.kv_transfer_params


class FlatLogprobs(MutableSequence):
    """Logprobs of many positions in six flat lists (vLLM's ``FlatLogprobs``, chosen by
    ``SamplingParams.flat_logprobs``): position i's entries are ``[start_indices[i], end_indices[i])`` of
    ``token_ids`` / ``logprobs`` / ``ranks`` / ``decoded_tokens``. Indexing gives the same ``{token_id: Logprob}``
    dict the list form holds (``{}`` for a position without logprobs, such as the first prompt token), and a
    slice gives a FlatLogprobs; a few long lists cost the garbage collector far less than a dict per token."""

    def __init__(self) -> None:
        self.start_indices: list[int] = []
        self.end_indices: list[int] = []
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.ranks: list[int | None] = []
        self.decoded_tokens: list[str | None] = []

    @classmethod
    def from_positions(cls, positions: list[dict[int, Logprob] | None]) -> FlatLogprobs:
        flat = cls()
        for position in positions:
            flat.append(position)
        return flat

    def append(self, position: dict[int, Logprob] | None) -> None:
        self.start_indices.append(len(self.token_ids))
        for token_id, lp in (position or {}).items():
            self.token_ids.append(token_id)
            self.logprobs.append(lp.logprob)
            self.ranks.append(lp.rank)
            self.decoded_tokens.append(lp.decoded_token)
        self.end_indices.append(len(self.token_ids))

    def __len__(self) -> int:
        return len(self.start_indices)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return FlatLogprobs.from_positions([self[i] for i in range(*index.indices(len(self)))])
        start, end = self.start_indices[index], self.end_indices[index]
        return {self.token_ids[j]: Logprob(self.logprobs[j], self.ranks[j], self.decoded_tokens[j])
                for j in range(start, end)}

    def __setitem__(self, index, value) -> None:
        raise TypeError("FlatLogprobs is append-only")

    def __delitem__(self, index) -> None:
        raise TypeError("FlatLogprobs is append-only")

    def insert(self, index, value) -> None:
        if index != len(self):
            raise TypeError("FlatLogprobs is append-only: insert only at the end")
        self.append(value)

    def __eq__(self, other) -> bool:
        if isinstance(other, FlatLogprobs | list):
            return len(self) == len(other) and all(self[i] == (other[i] or {}) for i in range(len(self)))
        return NotImplemented

    def __repr__(self) -> str:
        return f"FlatLogprobs({list(self)})"
