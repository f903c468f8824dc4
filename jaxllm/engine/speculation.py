"""The scheduler's part of speculative decoding (host, no jax): drafts for a decode, the sampling rows that
verify them, and vLLM's acceptance counters. The scheduler's docstring describes the step; docs/spec_decode.md
the whole design.

n-gram drafts are found on the host before a decode's slots are allocated. A draft model's drafts come from
the runner's ``drafter`` (``ModelRunner.propose_drafts``, a callable handed in by the engine, which keeps this
package free of jax): the scheduler allocates 1 + k slots per speculating decode first (the draft model writes
its own K/V of the drafts into the same slots of its cache), then asks for all drafts of the step at once.

Which decodes speculate (``plan``): with ``disable_by_batch_size``, vLLM's rule (all of them while at most that
many sequences run, else none); without it, the automatic rule of ``jaxllm.spec_decode.auto``, from each
request's measured acceptance and the runner's step-cost model (``cost``)."""

from __future__ import annotations

from typing import Any

from ..spec_decode import NgramProposer, SpeculativeConfig
from ..spec_decode.auto import AcceptanceTracker, StepLoad, choose, may_pay, speculating_seqs_cap
from .batch import ScheduledSeq
from .sequence import Sequence


class Speculation:
    def __init__(self, config: SpeculativeConfig, max_model_len: int, drafter: Any = None, cost: Any = None,
                 max_num_seqs: int | None = None) -> None:
        """``drafter`` (method "draft_model"): called with [(sequence, number of drafts)], returns one tuple of
        that many draft token ids per sequence. ``cost``: the runner's ``SpecCostModel`` (None: the automatic
        rule drafts every request worth drafting). ``max_num_seqs``: the scheduler's, for the cap on
        speculating sequences per step (``max_seqs``, the one the runner compiled for)."""
        self.config = config
        self.max_model_len = max_model_len
        self.cost = cost
        self.max_seqs = speculating_seqs_cap(config, max_num_seqs or 1 << 30, cost)
        self.acceptance = AcceptanceTracker()
        if config.uses_draft_runner:
            if not callable(drafter):
                raise ValueError(f"speculative_config method={config.method!r} needs a runner with a draft model "
                                 "(ModelRunner.propose_drafts)")
            self.proposer, self.drafter = None, drafter
        else:
            self.drafter = None
            self.proposer = NgramProposer(config.num_speculative_tokens, config.prompt_lookup_max,
                                          config.prompt_lookup_min)
        # vLLM's spec-decode counters: sequence-steps with drafts, draft tokens, accepted draft tokens, and
        # accepted drafts by position (index j: draft j + 1 accepted)
        self.num_drafts = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.num_accepted_tokens_per_pos = [0] * config.num_speculative_tokens

    def plan(self, running: list[Sequence], budget: int) -> set[int]:
        """The seq_ids of ``running`` sequences that speculate in the step after the one just scheduled, whose
        tokens are pending: a sequence that has computed all its known tokens decodes next (its pending token
        then its drafts; room counted for one pending token, the fewest a step emits); one still in its
        prefill does not speculate. ``budget``: max_num_batched_tokens."""
        self.acceptance.step += 1
        limit = self.config.disable_by_batch_size
        if limit is not None:
            return {seq.seq_id for seq in running} if len(running) <= limit else set()
        load, decodes = StepLoad(), []
        for seq in running:
            # left <= 0: its pending token(s) decode next (< 0: the step verifies drafts, not in token_ids)
            left = len(seq.token_ids) - seq.num_computed_tokens
            context = len(seq.token_ids) + (left <= 0)
            new = min(max(left, 1), budget)
            load.tokens += new
            load.keys += context
            load.pairs += new * context
            if left <= 0:
                decodes.append((seq, context))
        k = self.config.num_speculative_tokens
        if not decodes or not may_pay(self.cost, load, len(decodes), sum(c for _, c in decodes), k, self.max_seqs):
            return set()  # (a large batch: no per-request estimates needed)
        candidates = []
        for seq, context in decodes:
            room = self.room(seq, budget, pending=1)
            if room:
                match = 1.0 if self.proposer is None else self.acceptance.match_rate(seq.seq_id)
                candidates.append((seq.seq_id, room, context, self.acceptance.estimate(seq.seq_id), match))
        return set(choose(self.cost, load, candidates, self.max_seqs)) if candidates else set()

    def propose(self, seq: Sequence, budget: int) -> tuple[int, ...]:
        """Draft tokens for a decode of ``seq``: as many as still fit max_tokens, max_model_len and the step's
        token budget once the target's own token is counted. A sequence under structured outputs gets none:
        its grammar masks only the row of the token it has accepted so far. The automatic rule learns from each
        lookup whether the request's text repeats (``AcceptanceTracker.lookup``)."""
        room = self.room(seq, budget)
        if room <= 0:
            return ()
        drafts = tuple(self.proposer.propose(seq.token_ids, room))
        self.acceptance.lookup(seq.seq_id, bool(drafts))
        return drafts

    def room(self, seq: Sequence, budget: int, pending: int = 0) -> int:
        """How many drafts a decode of ``seq`` may verify: up to k, within max_tokens, max_model_len and the
        step's token budget once the target's own token is counted (0 under structured outputs, see
        ``propose``). ``pending``: tokens of ``seq`` sampled but not appended yet."""
        if seq.grammar is not None:
            return 0
        length = len(seq.token_ids) + pending
        room = min(seq.max_tokens - (length - seq.num_prompt_tokens), self.max_model_len - length, budget) - 1
        return max(0, min(room, self.config.num_speculative_tokens))

    def draft_all(self, pending: list[tuple[Sequence, ScheduledSeq, int]]) -> None:
        """Draft-model speculation: the drafts of every (sequence, its scheduled decode, number of drafts) of a
        step, proposed by the runner in one call once their slots are allocated, then attached."""
        if not pending:
            return
        drafts = self.drafter([(seq, n) for seq, _, n in pending])
        for (seq, sseq, n), d in zip(pending, drafts):
            if len(d) != n:
                raise RuntimeError(f"drafter returned {len(d)} drafts for seq {seq.seq_id}, expected {n}")
            self.attach(seq, sseq, tuple(d))

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
            _copy_with(sseq, token_ids=seq.token_ids + list(drafts[:j]) if j and history else seq.token_ids,
                       output_index=num_out + j,
                       banned_token_ids=seq.banned_token_ids if num_out + j < seq.params.min_tokens else (),
                       want_prompt_logprobs=False, draft_token_ids=(), spec_rows=())
            for j in range(len(drafts) + 1))

    def count(self, sseq: ScheduledSeq, num_emitted: int) -> None:
        """Record a verified step of ``sseq``: ``num_emitted - 1`` of its drafts were accepted."""
        self.num_drafts += 1
        self.num_draft_tokens += len(sseq.draft_token_ids)
        self.num_accepted_tokens += num_emitted - 1
        self.acceptance.observe(sseq.seq_id, len(sseq.draft_token_ids), num_emitted - 1)
        for j in range(num_emitted - 1):
            self.num_accepted_tokens_per_pos[j] += 1


def _copy_with(sseq: ScheduledSeq, **changes) -> ScheduledSeq:
    """``dataclasses.replace(sseq, **changes)`` without its per-field __init__ (ScheduledSeq has no
    __post_init__): k + 1 rows per speculating sequence and step, host work that no device work overlaps."""
    row = object.__new__(ScheduledSeq)
    row.__dict__.update(sseq.__dict__)
    row.__dict__.update(changes)
    return row
