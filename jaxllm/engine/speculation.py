"""The scheduler's part of speculative decoding (host, no jax): drafts for a decode, the sampling rows that
verify them, and vLLM's acceptance counters. The scheduler's docstring describes the step; docs/spec_decode.md
the whole design."""

from __future__ import annotations

import dataclasses

from ..spec_decode import NgramProposer, SpeculativeConfig
from .batch import ScheduledSeq
from .sequence import Sequence


class Speculation:
    def __init__(self, config: SpeculativeConfig, max_model_len: int) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.proposer = NgramProposer(config.num_speculative_tokens, config.prompt_lookup_max,
                                      config.prompt_lookup_min)
        # vLLM's spec-decode counters: sequence-steps with drafts, draft tokens, accepted draft tokens, and
        # accepted drafts by position (index j: draft j + 1 accepted)
        self.num_drafts = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.num_accepted_tokens_per_pos = [0] * config.num_speculative_tokens

    def propose(self, seq: Sequence, budget: int) -> tuple[int, ...]:
        """Draft tokens for a decode of ``seq``: as many as still fit max_tokens, max_model_len and the step's
        token budget once the target's own token is counted. A sequence under structured outputs gets none:
        its grammar masks only the row of the token it has accepted so far."""
        if seq.grammar is not None:
            return ()
        toks = seq.token_ids
        room = min(seq.max_tokens - (len(toks) - seq.num_prompt_tokens), self.max_model_len - len(toks),
                   budget) - 1
        return tuple(self.proposer.propose(toks, room)) if room > 0 else ()

    @staticmethod
    def attach(seq: Sequence, sseq: ScheduledSeq, drafts: tuple[int, ...]) -> None:
        """Make ``sseq`` (a decode of ``seq``) verify ``drafts``: 1 + k query tokens and k + 1 sampling rows,
        row j sampling output position ``output_index + j`` as if ``drafts[:j]`` had been generated (its
        token ids for penalties and bad words, its min_tokens banned ids, its seed index)."""
        sseq.num_new_tokens += len(drafts)
        sseq.draft_token_ids = drafts
        num_out = sseq.output_index
        history = seq.needs_history  # only penalties and multi-token bad words read a row's token ids
        sseq.spec_rows = tuple(
            dataclasses.replace(
                sseq, token_ids=seq.token_ids + list(drafts[:j]) if j and history else seq.token_ids,
                output_index=num_out + j,
                banned_token_ids=seq.banned_token_ids if num_out + j < seq.params.min_tokens else (),
                want_prompt_logprobs=False, draft_token_ids=(), spec_rows=())
            for j in range(len(drafts) + 1))

    def count(self, sseq: ScheduledSeq, num_emitted: int) -> None:
        """Record a verified step of ``sseq``: ``num_emitted - 1`` of its drafts were accepted."""
        self.num_drafts += 1
        self.num_draft_tokens += len(sseq.draft_token_ids)
        self.num_accepted_tokens += num_emitted - 1
        for j in range(num_emitted - 1):
            self.num_accepted_tokens_per_pos[j] += 1
