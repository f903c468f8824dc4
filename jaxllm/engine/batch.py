"""The contract between the engine (host bookkeeping, no jax) and the model runner (device work).

One engine step: ``Scheduler.schedule()`` returns a ``ScheduledBatch``; ``ModelRunner.execute(batch)`` runs the
jitted step over the flattened tokens of all scheduled sequences and returns a ``RunnerOutput``;
``Scheduler.update(batch, output)`` appends sampled tokens and applies stop checks.

Everything here is plain Python so the scheduler can be tested in microseconds with a fake runner.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class ScheduledSeq:
    """One sequence's share of a step. Its tokens ``token_ids[start:start + num_new_tokens]`` are computed
    at positions ``start .. start + num_new_tokens - 1``; their K/V are written to the cache slots that
    ``block_table`` maps those positions to."""

    seq_id: int
    token_ids: list[int]  # the whole sequence so far: prompt + generated tokens (read-only for the runner)
    start: int  # tokens already in the KV cache (including prefix-cache hits)
    num_new_tokens: int  # tokens computed this step: a prefill chunk, or 1 for a decode
    block_table: list[int]  # physical block ids covering positions [0, start + num_new_tokens)
    num_prompt_tokens: int  # length of the original prompt (the rest of token_ids are outputs)
    sampling_params: Any  # jaxllm.SamplingParams
    sample: bool  # True when this step reaches the end of token_ids, so a new token is sampled
    output_index: int  # generated tokens so far: the position in the request's random stream
    rng_seed: int  # seed of this sequence's sampling stream (the user's seed, or one the engine drew)
    banned_token_ids: tuple[int, ...] = ()  # eos/stop ids masked while fewer than min_tokens were generated
    want_prompt_logprobs: bool = False  # return prompt logprobs for the positions computed this step
    pooling_params: Any = None  # a pooling request's PoolingParams (prefill only: pooled, never sampled)
    grammar: Any = None  # structured outputs: the sequence's GrammarState (None: unconstrained)
    # [ceil(V / 32)] int32 allowed-token bits of this step's sampling row, filled by the engine just before
    # dispatch (None: nothing masked); the sampler sets the logits of the other tokens to -inf.
    grammar_bitmask: Any = None
    lora_request: Any = None  # jaxllm.lora.LoRARequest of the sequence, None for the base model
    prompt_embeds: Any = None  # an EmbedsPrompt's float32 rows [num_prompt_tokens, D] (None: ids only)
    # Speculative decoding: the k draft tokens computed after token_ids[start] (num_new_tokens = 1 + k; the
    # drafts are not in token_ids), and the k + 1 sampling rows that verify them: row j samples output
    # position output_index + j as if drafts[:j] had been generated (its token_ids, banned ids, seed index).
    draft_token_ids: tuple[int, ...] = ()
    spec_rows: tuple[ScheduledSeq, ...] = ()

    @property
    def end(self) -> int:
        return self.start + self.num_new_tokens

    def sampling_rows(self) -> tuple[ScheduledSeq, ...]:
        """The sampler rows of this sequence: its k + 1 ``spec_rows`` when it speculates, else itself."""
        return self.spec_rows or (self,)


@dataclasses.dataclass
class ScheduledBatch:
    """A ragged batch: the concatenation of every scheduled sequence's new tokens, and the host-tier copies
    the runner makes before computing them (see ``host_tier.py`` for their order)."""

    seqs: list[ScheduledSeq]
    swap_out: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (device block, host slot)
    swap_in: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (host slot, device block)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.seqs)

    @property
    def num_seqs(self) -> int:
        return len(self.seqs)

    @property
    def num_sampling_rows(self) -> int:
        """Sequences plus the draft tokens of the speculative ones (the logits rows a step computes)."""
        return sum(len(s.sampling_rows()) for s in self.seqs)


@dataclasses.dataclass
class TokenLogprobs:
    """Logprob data for one sampled (or prompt) token.

    ``logprob``/``rank`` are for ``token_id`` itself (rank 1 = most likely); ``top`` holds the
    ``k`` most likely (token_id, logprob) pairs, best first, where k is what the request asked for."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


@dataclasses.dataclass
class RunnerOutput:
    """What one step produced, keyed by ``ScheduledSeq.seq_id``.

    ``sampled`` has an entry for each scheduled sequence with ``sample=True`` that does not speculate.
    ``logprobs`` has an entry for those whose SamplingParams.logprobs is not None.
    ``prompt_logprobs`` maps seq_id to the logprobs of prompt tokens ``start + 1 .. end`` (clipped to the
    prompt): entry j is for token ``token_ids[start + 1 + j]`` given the tokens before it."""

    sampled: dict[int, int]
    logprobs: dict[int, TokenLogprobs] = dataclasses.field(default_factory=dict)
    prompt_logprobs: dict[int, list[TokenLogprobs]] = dataclasses.field(default_factory=dict)
    # Speculative sequences (``draft_token_ids``): the tokens they emit this step, the accepted drafts then the
    # target's own token (1..k + 1), and, with logprobs, one entry per emitted token. No ``sampled`` entry.
    accepted: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    accepted_logprobs: dict[int, list[TokenLogprobs]] = dataclasses.field(default_factory=dict)
    # pooling requests: seq_id -> pooled data (numpy, or a PoolingOutput of it), for each one whose last prompt
    # chunk ran this step
    pooled: dict[int, Any] = dataclasses.field(default_factory=dict)
    # sequences whose sampling row had no valid token (NaN / +inf logits, or every token masked): they get no
    # ``sampled`` entry (speculative ones: ``accepted`` holds the tokens of the rows before the bad one) and
    # finish with finish_reason "error"
    nonfinite: set[int] = dataclasses.field(default_factory=set)
