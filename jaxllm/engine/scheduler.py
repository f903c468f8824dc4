"""vLLM-v1-style unified scheduler: one ragged batch per step mixing decodes and chunked prefills.

Each step has a token budget (``max_num_batched_tokens``) and at most ``max_num_seqs`` running sequences.
RUNNING sequences are served first, in admission order: a decode takes 1 token, an unfinished (chunked)
prefill takes what is left of it, up to the budget. Then WAITING sequences are admitted first come first
served as new prefills, starting after their prefix-cache hits and chunked to fit the budget. When a
running sequence needs a block and none is free, the most recently admitted running sequence is
preempted by recompute: its blocks are freed and it goes back to the front of the waiting queue with
``num_computed_tokens = 0`` (its generated tokens are kept and recomputed in its next prefill, so outputs
are exact). No waiting sequence is admitted in a step that preempted.

Preemption by swap (with a host tier, see ``host_tier.py``): the victim's blocks are copied to host slots
and it keeps ``num_computed_tokens``; when it is admitted again its blocks are copied back into fresh device
blocks and it continues where it stopped. ``preemption_mode`` picks "recompute" or "swap" for every
preemption, or (None) the cheaper one by ``PreemptionCost``; a swap that finds too few free host slots
falls back to recompute.

With ``policy="priority"`` (vLLM's ``scheduling_policy``), both queues are ordered by (priority, arrival time),
lower first: the waiting queue is kept sorted (a preempted sequence goes back to its place in it), and the
running list is sorted at the start of each step, so that running sequences get the token budget in priority
order and the one preempted when blocks run out is the lowest priority (the latest arrival among equals).

Asynchronous scheduling (the engine's default with a runner that has ``dispatch``/``fetch``): step N+1 may be
scheduled while step N runs. Each sequence that samples in step N then gets a placeholder token
``-(row + 1)`` (``row``: its row in step N's batch), which the runner reads from step N's sampled ids on
device and ``update`` replaces by the real token. ``num_computed_tokens`` advances when a step is scheduled.
A sequence whose pending token surely ends it (max_tokens, max_model_len) is not scheduled again; one that
turns out to stop on an EOS / stop id / stop string computed one extra token, which is dropped. Sequences whose
next sampling row depends on their output tokens on the host (penalties, multi-token bad words) make the
engine wait for step N first (``can_overlap``). Structured outputs need step N's token on the host too, but only
for the mask of step N+1's row: the engine schedules step N+1 and launches its forward while step N runs, then
waits for step N, feeds its tokens to the grammars and launches step N+1's sampler with the masks
(``LLMEngine._launch_constrained``). A waiting sequence
whose grammar is still compiling is skipped (it keeps its place in the queue).

Speculative decoding (``speculative_config``): a running decode whose tokens are all on the host gets up to k
draft tokens (n-gram: found on the host before its slots are allocated; draft model: proposed by the runner's
``drafter`` for all such decodes at once, after their slots are allocated) and schedules 1 + k query tokens
(its last token, then the drafts) in the same ragged step as the others; the step's sampler emits the accepted drafts plus one token of the target's
(1..k + 1 tokens), which ``update`` appends one by one with the usual stop checks (truncating at the first
stop). The slots of rejected drafts were allocated but hold stale K/V: the sequence's ``num_computed_tokens``
only counts accepted positions, so later steps overwrite them. Proposing needs the previous step's tokens on
the host, so a step that speculates is not overlapped with the next (``needs_sync``), and a step scheduled
while another is in flight does not speculate; nor does a sequence under structured outputs. Which decodes
speculate is chosen when the step before is scheduled (``Speculation.plan``), which then waits for its tokens
(``needs_sync``) only when some do: with ``disable_by_batch_size``, all of them while at most that many
sequences run (vLLM's rule); without it, the automatic rule (``jaxllm.spec_decode.auto``) weighs each request's
measured acceptance against the step's roofline cost, which turns speculation off in large, compute-bound
batches and for requests whose drafts fail.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections import deque
from typing import Any

from ..spec_decode import SpeculativeConfig
from .batch import RunnerOutput, ScheduledBatch, ScheduledSeq
from .block_manager import BlockManager
from .evictions import Evictions
from .host_tier import PREEMPTION_MODES, PreemptionCost
from .scheduled_seq import scheduled_seq
from .sequence import Sequence, SequenceStatus
from .speculation import Speculation
from .token_updates import TokenUpdates

POLICIES = ("fcfs", "priority")


@dataclasses.dataclass
class _InFlight:
    """A scheduled step whose results ``update`` has not applied yet."""

    batch: ScheduledBatch
    seqs: list[Sequence]  # batch order
    hashes: list[int]  # blocks whose prefix-cache hashes were registered for this step
    needs_sync: bool  # some sampling row needs this step's tokens on the host before the next step


class Scheduler(TokenUpdates, Evictions):
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        decode_token: Any = None,  # token id -> str for Logprob.decoded_token, or None
        policy: str = "fcfs",  # or "priority"
        preemption_mode: str | None = None,  # "recompute", "swap", or None: the cheaper by preemption_cost
        preemption_cost: PreemptionCost | None = None,
        max_loras: int | None = None,  # distinct LoRA adapters among running sequences (None: no limit)
        speculative_config: SpeculativeConfig | None = None,
        drafter: Any = None,  # method "draft_model": the runner's propose_drafts (speculation.py)
        spec_cost: Any = None,  # the runner's SpecCostModel for the automatic speculation rule, or None
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"scheduling policy {policy!r} is not supported; choose one of {POLICIES}")
        if preemption_mode not in (None, *PREEMPTION_MODES):
            raise ValueError(f"preemption_mode {preemption_mode!r} is not supported; choose one of "
                             f"{PREEMPTION_MODES} or None")
        if preemption_mode == "swap" and block_manager.host is None:
            raise ValueError("preemption_mode='swap' needs a host tier (swap_space > 0)")
        self.preemption_mode = preemption_mode
        self.preemption_cost = preemption_cost
        self.policy = policy
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.decode_token = decode_token
        self.max_loras = max_loras
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order
        self._inflight: deque[_InFlight] = deque()  # scheduled steps not yet updated, oldest first
        self.num_preemptions = 0
        self.num_swap_preemptions = 0  # preemptions by swap (included in num_preemptions)
        self.num_generated_tokens = 0  # tokens appended by update (dropped extra tokens not counted)
        # prefix-cache lookups at admission: prompt (+ output) tokens looked up, and tokens found cached
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.speculation = (Speculation(speculative_config, max_model_len, drafter, spec_cost, max_num_seqs)
                            if speculative_config else None)
        self._next_plan: set[int] = set()  # seq_ids that speculate in the next step (Speculation.plan)

    def add(self, seq: Sequence) -> None:
        if self.policy == "priority":
            bisect.insort(self.waiting, seq, key=Sequence.priority_key)
        else:
            self.waiting.append(seq)

    def _requeue(self, seq: Sequence) -> None:
        """A preempted (or failed) sequence goes back to the front of the waiting queue (fcfs), or to its place
        in the priority order."""
        if self.policy == "priority":
            bisect.insort(self.waiting, seq, key=Sequence.priority_key)
        else:
            self.waiting.appendleft(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def can_overlap(self) -> bool:
        """Whether the next step may be scheduled before the one in flight is updated."""
        return len(self._inflight) == 1 and not self._inflight[0].needs_sync

    def _expect_tokens(self, step: _InFlight) -> None:
        """Placeholders for the tokens step ``step`` is sampling (see the module docstring)."""
        for row, (sseq, seq) in enumerate(zip(step.batch.seqs, step.seqs)):
            if sseq.sample and seq.status != SequenceStatus.FINISHED:
                seq.token_ids.append(-(row + 1))

    # ---- schedule --------------------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        """The next step's batch. With a step in flight (asynchronous scheduling), its sampled tokens are
        placeholders. An empty batch (nothing to run) is not recorded as in flight."""
        if len(self._inflight) > 1 or (self._inflight and self._inflight[0].needs_sync):
            raise RuntimeError("schedule() with a step in flight needs can_overlap()")
        if self._inflight:
            self._expect_tokens(self._inflight[0])
        if self.policy == "priority":
            self.running.sort(key=Sequence.priority_key)
        batch: list[ScheduledSeq] = []
        scheduled: list[Sequence] = []
        budget, preempted = self._schedule_running(batch, scheduled)
        if not preempted:  # no waiting sequence is admitted in a step that preempted
            self._admit_waiting(batch, scheduled, budget)
        for sseq, seq in zip(batch, scheduled):
            seq.num_computed_tokens = sseq.start + sseq.num_new_tokens
        return self._record_step(batch, scheduled)

    def _schedule_running(self, batch: list[ScheduledSeq], scheduled: list[Sequence]) -> tuple[int, bool]:
        """Running sequences first, in order: each decode's token (with its drafts when it speculates) or what
        is left of a chunked prefill, preempting from the back of the running list when blocks run out.
        Appends to ``batch`` / ``scheduled``; returns (the token budget left, whether it preempted)."""
        bm, running, spec = self.block_manager, self.running, self.speculation
        budget, preempted, i = self.max_num_batched_tokens, False, 0
        # the decodes that speculate, chosen when the previous step was scheduled (which then waited for its
        # tokens: a step scheduled while another is in flight cannot propose drafts)
        chosen, self._next_plan = self._next_plan, set()
        speculate = bool(chosen) and not self._inflight
        pending: list[tuple[Sequence, ScheduledSeq, int]] = []  # draft model: decodes awaiting their drafts
        while i < len(running) and budget > 0:
            seq = running[i]
            toks = seq.token_ids
            if toks[-1] < 0 and (len(toks) - seq.num_prompt_tokens >= seq.max_tokens
                                 or len(toks) >= self.max_model_len):
                i += 1  # its pending token is its last: nothing more to compute
                continue
            n = min(len(toks) - seq.num_computed_tokens, budget)
            drafts, num_model_drafts = (), 0
            if speculate and n == 1 and seq.seq_id in chosen and spec.drafter is None:
                drafts = spec.propose(seq, budget)
            elif speculate and n == 1 and seq.seq_id in chosen:
                num_model_drafts = spec.room(seq, budget)  # proposed below, once their slots are allocated
            n += len(drafts) + num_model_drafts
            while not bm.allocate_slots(seq, n):
                victim = running.pop()  # the most recently admitted; it may be seq itself
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                batch.append(scheduled_seq(seq, seq.num_computed_tokens, n - num_model_drafts, drafts))
                if num_model_drafts:
                    pending.append((seq, batch[-1], num_model_drafts))
                scheduled.append(seq)
                budget -= n
                i += 1
                continue
            break  # seq preempted itself: every later sequence is already preempted
        if pending:
            spec.draft_all(pending)
        return budget, preempted

    def _admit_waiting(self, batch: list[ScheduledSeq], scheduled: list[Sequence], budget: int) -> None:
        """Waiting sequences in queue order as new prefills (or swapped-out ones resumed) while the budget and
        ``max_num_seqs`` allow; the head of the queue that does not fit stops admission (nobody overtakes it).
        Those that cannot start this step keep their place: a grammar still compiling (structured outputs), or
        an adapter beyond ``max_loras``."""
        waiting, running = self.waiting, self.running
        loras = {s.lora_int_id for s in running} - {0} if self.max_loras is not None else set()
        skipped: list[Sequence] = []
        now = time.time()
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            seq = waiting[0]
            if (seq.grammar is not None and not seq.grammar.ready()) or self._adapter_waits(seq, loras):
                skipped.append(waiting.popleft())
                continue
            placed = self._allocate_admission(seq, budget)
            if placed is None:
                break
            start, n = placed
            waiting.popleft()
            if seq.lora_int_id:
                loras.add(seq.lora_int_id)
            if seq.num_cached_tokens is None:  # reported hits: those of the first admission
                seq.num_cached_tokens = start
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
            seq.status = SequenceStatus.RUNNING
            running.append(seq)
            batch.append(scheduled_seq(seq, start, n))
            scheduled.append(seq)
            budget -= n
        waiting.extendleft(reversed(skipped))

    def _allocate_admission(self, seq: Sequence, budget: int) -> tuple[int, int] | None:
        """(start, tokens) of an admitted sequence's first chunk with its blocks allocated: after its prefix-cache
        hits, or where it stopped when it was preempted by swap (its blocks copied back); None when the blocks
        do not fit."""
        bm = self.block_manager
        if seq.host_blocks:  # preempted by swap: resume where it stopped
            start = seq.num_computed_tokens
            n = min(len(seq.token_ids) - start, budget)
            return (start, n) if bm.swap_in(seq, n) else None
        hits = bm.get_computed_blocks(seq)
        start = len(hits) * bm.block_size
        n = min(len(seq.token_ids) - start, budget)
        if not bm.allocate_slots(seq, n, hits):
            return None
        if bm.enable_prefix_caching and seq.read_prefix_cache:
            self.prefix_cache_queries += len(seq.token_ids)
            self.prefix_cache_hits += start
        return start, n

    def _record_step(self, batch: list[ScheduledSeq], scheduled: list[Sequence]) -> ScheduledBatch:
        """The ScheduledBatch, recorded as in flight unless empty, with the block copies queued for it and the
        next step's speculation plan."""
        bm = self.block_manager
        result = ScheduledBatch(batch)
        if batch:  # copies queued by a step with nothing to run wait for the next one
            result.swap_out, result.swap_in = bm.take_swaps()
            if self.speculation is not None:
                self._next_plan = self.speculation.plan(self.running, self.max_num_batched_tokens)
            # a verifying step emits a variable number of tokens, which no placeholder stands for
            needs_sync = (bool(self._next_plan) or any(s.draft_token_ids for s in batch)
                          or any(seq.needs_history for seq in scheduled))
            self._inflight.append(_InFlight(result, scheduled, bm.take_pending_hashes(), needs_sync))
        return result

    def _adapter_waits(self, seq: Sequence, loras: set[int]) -> bool:
        """Whether admitting ``seq`` would make more than ``max_loras`` distinct LoRA adapters run at once."""
        return (self.max_loras is not None and seq.lora_int_id != 0 and seq.lora_int_id not in loras
                and len(loras) >= self.max_loras)

    def waiting_grammars(self) -> list:
        """GrammarStates of waiting sequences still compiling (the engine waits for one when nothing else can
        run)."""
        return [s.grammar for s in self.waiting if s.grammar is not None and not s.grammar.ready()]

    # ---- update ----------------------------------------------------------------------------------------

    def update(self, batch: ScheduledBatch, output: RunnerOutput, next_masks: Any = None) -> list[Sequence]:
        """Apply the oldest in-flight step's results: append (or fill in) sampled tokens, collect logprobs,
        apply stop checks. Finished sequences release their blocks and are returned. Meanwhile the step's
        grammars consume their tokens and then fill ``next_masks`` (the next step's bitmask rows, a
        ``MaskFill``), on the grammar thread (``_start_grammars``); both are done when this returns."""
        if not self._inflight or self._inflight[0].batch is not batch:
            raise ValueError("update() must get the oldest batch returned by schedule() and not yet updated")
        step = self._inflight.popleft()
        now = time.time()
        finished: list[Sequence] = []
        constrained, grammars = self._start_grammars(batch, step.seqs, output, next_masks)
        try:
            self._append_step(batch, step.seqs, output, now, finished)
        except BaseException:
            if grammars is not None:
                grammars.undo()
            raise
        if grammars is not None:
            self._finish_grammars(constrained, grammars, finished)
        if finished:
            for seq in finished:
                self.block_manager.free(seq)
                if self.speculation is not None:
                    self.speculation.acceptance.forget(seq.seq_id)
            self.running = [s for s in self.running if s.status != SequenceStatus.FINISHED]
        return finished
