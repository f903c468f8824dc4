"""vLLM-v1-style unified scheduler: one ragged batch per step mixing decodes and chunked prefills.

Each step has a token budget (``max_num_batched_tokens``) and at most ``max_num_seqs`` running sequences.
RUNNING sequences are served first, in admission order: a decode takes 1 token, an unfinished (chunked)
prefill takes what is left of it, up to the budget. Then WAITING sequences are admitted first come first
served as new prefills, starting after their prefix-cache hits and chunked to fit the budget. When a
running sequence needs a block and none is free, the most recently admitted running sequence is
preempted by recompute: its blocks are freed and it goes back to the front of the waiting queue with
``num_computed_tokens = 0`` (its generated tokens are kept and recomputed in its next prefill, so outputs
are exact). No waiting sequence is admitted in a step that preempted.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from .batch import RunnerOutput, ScheduledBatch, ScheduledSeq
from .block_manager import BlockManager
from .detokenizer import make_logprobs
from .sequence import Sequence, SequenceStatus


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        decode_token: Any = None,  # token id -> str for Logprob.decoded_token, or None
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.decode_token = decode_token
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order
        self._scheduled: list[Sequence] = []  # sequences of the last batch, in batch order
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- schedule --------------------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        bm = self.block_manager
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        batch: list[ScheduledSeq] = []
        preempted = False
        now = time.time()

        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = min(len(seq.token_ids) - seq.num_computed_tokens, budget)
            while not bm.allocate_slots(seq, n):
                victim = running.pop()  # the most recently admitted; it may be seq itself
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                batch.append(self._scheduled_seq(seq, seq.num_computed_tokens, n))
                scheduled.append(seq)
                budget -= n
                i += 1
                continue
            break  # seq preempted itself: every later sequence is already preempted

        if not preempted:
            waiting = self.waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                seq = waiting[0]
                hits = bm.get_computed_blocks(seq)
                start = len(hits) * bm.block_size
                n = min(len(seq.token_ids) - start, budget)
                if not bm.allocate_slots(seq, n, hits):
                    break  # FCFS: nobody overtakes the head of the queue
                waiting.popleft()
                if seq.num_cached_tokens is None:  # reported hits: those of the first admission
                    seq.num_cached_tokens = start
                if seq.first_scheduled_time is None:
                    seq.first_scheduled_time = now
                seq.status = SequenceStatus.RUNNING
                running.append(seq)
                batch.append(self._scheduled_seq(seq, start, n))
                scheduled.append(seq)
                budget -= n

        self._scheduled = scheduled
        return ScheduledBatch(batch)

    def _scheduled_seq(self, seq: Sequence, start: int, n: int) -> ScheduledSeq:
        num_out = len(seq.token_ids) - seq.num_prompt_tokens
        return ScheduledSeq(
            seq_id=seq.seq_id,
            token_ids=seq.token_ids,  # live list, read-only for the runner until update()
            start=start,
            num_new_tokens=n,
            block_table=seq.block_table,  # live list, same
            num_prompt_tokens=seq.num_prompt_tokens,
            sampling_params=seq.params,
            sample=start + n == len(seq.token_ids),
            output_index=num_out,
            rng_seed=seq.rng_seed,
            banned_token_ids=seq.banned_token_ids if num_out < seq.params.min_tokens else (),
            # (after a preemption the prompt is recomputed, but its logprobs are already recorded)
            want_prompt_logprobs=seq.want_prompt_logprobs
            and start < seq.num_prompt_tokens - 1
            and len(seq.prompt_logprobs) < seq.num_prompt_tokens,
        )

    def reset_scheduled(self) -> None:
        """After a failed step (the runner raised): the K/V of the scheduled tokens may be missing, so every
        sequence of that batch releases its blocks and goes back to the front of the waiting queue, in
        order, to be recomputed (call after ``BlockManager.drop_pending_hashes``)."""
        failed = {id(s) for s in self._scheduled}
        self.running = [s for s in self.running if id(s) not in failed]
        for seq in reversed(self._scheduled):
            self.block_manager.free(seq)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
            self.waiting.appendleft(seq)
        self._scheduled = []

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    # ---- update ----------------------------------------------------------------------------------------

    def update(self, batch: ScheduledBatch, output: RunnerOutput) -> list[Sequence]:
        """Apply one step's results: advance ``num_computed_tokens``, append sampled tokens, collect
        logprobs, apply stop checks. Finished sequences release their blocks and are returned."""
        if len(batch.seqs) != len(self._scheduled):
            raise ValueError("update() must get the batch returned by the last schedule()")
        now = time.time()
        finished: list[Sequence] = []
        for sseq, seq in zip(batch.seqs, self._scheduled):
            seq.num_computed_tokens = sseq.start + sseq.num_new_tokens
            decode = self.decode_token if seq.params.detokenize else None
            if sseq.want_prompt_logprobs:
                self._add_prompt_logprobs(seq, sseq.start, output.prompt_logprobs.get(seq.seq_id), decode)
            if not sseq.sample:
                continue
            try:
                token = int(output.sampled[seq.seq_id])
            except KeyError:
                raise RuntimeError(f"runner returned no sampled token for seq {seq.seq_id}") from None
            seq.token_ids.append(token)
            if seq.logprobs is not None:
                tl = output.logprobs.get(seq.seq_id)
                if tl is None:
                    raise RuntimeError(
                        f"runner returned no logprobs for seq {seq.seq_id} (logprobs requested)"
                    )
                seq.logprobs.append(make_logprobs(tl, decode))
                seq.cumulative_logprob += float(tl.logprob)
            if seq.first_token_time is None:
                seq.first_token_time = now
            seq.last_token_time = now
            if self._check_stop(seq, token):
                finished.append(seq)
        self._scheduled = []
        if finished:
            for seq in finished:
                self.block_manager.free(seq)
            self.running = [s for s in self.running if s.status != SequenceStatus.FINISHED]
        return finished

    def _add_prompt_logprobs(self, seq: Sequence, start: int, entries: list | None, decode: Any) -> None:
        """Entry j is for prompt token ``start + 1 + j``; positions already recorded (before a preemption)
        are skipped, so recomputation does not duplicate them."""
        if not entries:
            return
        pls = seq.prompt_logprobs
        for j, tl in enumerate(entries):
            pos = start + 1 + j
            if pos >= seq.num_prompt_tokens:
                break
            if pos == len(pls):
                pls.append(make_logprobs(tl, decode))

    def _check_stop(self, seq: Sequence, token: int) -> bool:
        """vLLM's order: EOS / stop ids (not before min_tokens), then length (max_tokens, max_model_len);
        then stop strings, which override "length". Returns whether the sequence finished."""
        num_out = len(seq.token_ids) - seq.num_prompt_tokens
        reason: str | None = None
        stop_reason: int | str | None = None
        if num_out >= seq.params.min_tokens:
            if token in seq.eos_token_ids:
                reason = "stop"
            elif token in seq.stop_token_ids:
                reason, stop_reason = "stop", token
        if reason is None and (num_out >= seq.max_tokens or len(seq.token_ids) >= self.max_model_len):
            reason = "length"
        if seq.detokenizer is not None:
            stop_str = seq.detokenizer.update(token, num_out, reason == "stop")
            if stop_str is not None:
                reason, stop_reason = "stop", stop_str
        if reason is None:
            return False
        seq.finish(reason, stop_reason)
        return True

    # ---- abort -----------------------------------------------------------------------------------------

    def abort(self, seqs: list[Sequence]) -> None:
        """Remove unfinished sequences (between steps) and release their blocks."""
        doomed = {id(s) for s in seqs if s.status != SequenceStatus.FINISHED}
        if not doomed:
            return
        self.waiting = deque(s for s in self.waiting if id(s) not in doomed)
        keep = []
        for s in self.running:
            if id(s) in doomed:
                self.block_manager.free(s)
            else:
                keep.append(s)
        self.running = keep
        for s in seqs:
            if id(s) in doomed:
                s.finish("abort")
