"""One generated sequence: its tokens, KV-cache bookkeeping and output state (host side, no jax).

A request with ``SamplingParams.n = k`` owns k sequences (children ``index`` 0..k-1) that start from
the same prompt; prefix caching lets them share the prompt's KV blocks.
"""

from __future__ import annotations

import enum
from typing import Any

from ..outputs import PromptLogprobs, SampleLogprobs


class SequenceStatus(enum.IntEnum):
    WAITING = 0  # queued for (re)prefill: new, or preempted (num_computed_tokens reset to 0)
    RUNNING = 1  # holds KV blocks and is scheduled every step while the token budget allows
    FINISHED = 2  # done: see finish_reason ("stop", "length", "abort" or "error")


class Sequence:
    """``token_ids`` = prompt + generated tokens; positions ``[0, num_computed_tokens)`` have K/V in the
    blocks of ``block_table`` (``block_table[i]`` holds positions ``i*block_size .. (i+1)*block_size-1``).
    ``block_hashes[i]`` is the prefix-cache hash of full block i (chained: it covers all tokens before
    it), computed lazily and kept across preemptions because tokens are only ever appended."""

    __slots__ = (
        "arrival_time",
        "banned_token_ids",
        "block_hashes",
        "block_table",
        "cache_salt",
        "cumulative_logprob",
        "detokenizer",
        "eos_token_ids",
        "finish_reason",
        "first_scheduled_time",
        "first_token_time",
        "grammar",
        "host_blocks",
        "index",
        "last_token_time",
        "logprobs",
        "lora_request",
        "max_tokens",
        "needs_history",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_prompt_tokens",
        "num_registered_blocks",
        "params",
        "pooled",
        "pooling_params",
        "priority",
        "prompt_embeds",
        "prompt_logprobs",
        "read_prefix_cache",
        "request_id",
        "rng_seed",
        "seq_id",
        "status",
        "stop_reason",
        "stop_token_ids",
        "token_ids",
        "want_prompt_logprobs",
    )

    def __init__(
        self,
        seq_id: int,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: Any,
        *,
        max_tokens: int,
        rng_seed: int,
        eos_token_ids: frozenset[int],
        stop_token_ids: frozenset[int],
        banned_token_ids: tuple[int, ...],
        want_prompt_logprobs: bool,
        detokenizer: Any = None,
        needs_history: bool = False,
        priority: int = 0,
        arrival_time: float = 0.0,
        grammar: Any = None,
        lora_request: Any = None,
        cache_salt: str | None = None,
    ) -> None:
        self.seq_id = seq_id
        self.request_id = request_id
        self.index = index  # child index within the request (CompletionOutput.index)
        self.token_ids = list(prompt_token_ids)  # own copy: children append different tokens
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens: int | None = None  # prefix-cache hit tokens at first admission
        self.block_table: list[int] = []
        self.host_blocks: list[int] = []  # host-tier slots of its blocks while preempted by swap
        self.block_hashes: list[int] = []
        self.num_registered_blocks = 0  # leading blocks of block_table already offered to the cache
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.params = params
        self.max_tokens = max_tokens  # resolved: SamplingParams.max_tokens or what max_model_len allows
        self.rng_seed = rng_seed
        self.eos_token_ids = eos_token_ids  # stop with stop_reason None (empty when ignore_eos)
        self.stop_token_ids = stop_token_ids  # stop with stop_reason = the id
        self.banned_token_ids = banned_token_ids  # masked while fewer than min_tokens were generated
        self.want_prompt_logprobs = want_prompt_logprobs
        # Its sampling row reads its output tokens on the host (penalties, multi-token bad words), so the
        # step after one where it samples cannot be scheduled before that step's tokens are known.
        self.needs_history = needs_history
        # Structured outputs: the matcher state (jaxllm.structured_outputs.grammar.GrammarState), fed every
        # sampled token by Scheduler.update; None for an unconstrained sequence.
        self.grammar = grammar
        # A sequence that returns prompt logprobs must compute every prompt position (vLLM skips the
        # prefix cache for it); the others may start from cached blocks.
        self.read_prefix_cache = not want_prompt_logprobs
        self.cumulative_logprob: float | None = None if params.logprobs is None else 0.0
        self.logprobs: SampleLogprobs | None = None if params.logprobs is None else []
        self.prompt_logprobs: PromptLogprobs | None = [None] if want_prompt_logprobs else None
        self.detokenizer = detokenizer
        self.pooling_params: Any = None  # set for a pooling request (prefill only; see Scheduler.update)
        self.pooled: Any = None  # its pooled data once the whole prompt ran
        self.lora_request = lora_request  # jaxllm.lora.LoRARequest or None (the base model)
        # EmbedsPrompt: float32 [num_prompt_tokens, D] fed in place of the (placeholder) prompt ids' embeddings;
        # kept until the sequence ends, so a preempted sequence recomputes from them
        self.prompt_embeds: Any = None
        self.cache_salt = cache_salt  # the prompt's cache_salt (keys the prefix cache, as the adapter) or None
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None
        # scheduling_policy="priority": lower (priority, arrival_time) is admitted first, preempted last
        self.priority = priority
        self.arrival_time = arrival_time

    def priority_key(self) -> tuple[int, float, int]:
        """Order of the priority policy: priority, then arrival, then creation (children of one request)."""
        return (self.priority, self.arrival_time, self.seq_id)

    @property
    def lora_int_id(self) -> int:
        """The adapter's id, 0 for the base model (it keys the prefix cache and the scheduler's adapter limit)."""
        return 0 if self.lora_request is None else self.lora_request.lora_int_id

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def text(self) -> str:
        return self.detokenizer.output_text if self.detokenizer is not None else ""

    def finish(self, reason: str, stop_reason: int | str | None = None) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason

    def __repr__(self) -> str:
        return (
            f"Sequence(seq_id={self.seq_id}, request_id={self.request_id!r}, index={self.index}, "
            f"status={self.status.name}, num_tokens={len(self.token_ids)}, "
            f"num_prompt_tokens={self.num_prompt_tokens}, num_computed_tokens={self.num_computed_tokens}, "
            f"blocks={len(self.block_table)})"
        )
