"""Taking sequences off the device: preemption (by recompute or by swap to the host tier), abort, and the
requeueing of every sequence of the steps in flight after a failed step. Mixed into ``Scheduler`` (see its
module docstring for when each happens; host side, no jax)."""

from __future__ import annotations

from collections import deque

from .sequence import Sequence, SequenceStatus


class Evictions:
    """Needs the scheduler's ``block_manager``, ``waiting``, ``running``, ``_inflight``, ``_next_plan``,
    ``speculation``, ``preemption_mode``, ``preemption_cost``, its counters and ``_requeue``."""

    def _preempt(self, seq: Sequence) -> None:
        if self._prefer_swap(seq) and self.block_manager.swap_out(seq):
            self.num_swap_preemptions += 1
        else:
            self.block_manager.free(seq)
            seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self._requeue(seq)
        self.num_preemptions += 1

    def _prefer_swap(self, seq: Sequence) -> bool:
        if self.block_manager.host is None or self.preemption_mode == "recompute":
            return False
        if self.preemption_mode == "swap":
            return True
        cost = self.preemption_cost
        return cost is not None and cost.prefer_swap(len(seq.block_table), seq.num_computed_tokens)

    def abort(self, seqs: list[Sequence]) -> None:
        """Remove unfinished sequences (between steps) and release their blocks."""
        doomed = {id(s) for s in seqs if s.status != SequenceStatus.FINISHED}
        if not doomed:
            return
        for s in self.waiting:
            if id(s) in doomed and s.host_blocks:  # preempted by swap: its host slots
                self.block_manager.free(s)
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
                if self.speculation is not None:
                    self.speculation.acceptance.forget(s.seq_id)

    def reset_inflight(self) -> None:
        """After a failed step (the runner raised): the K/V of every step in flight may be missing, so their
        prefix-cache hashes are dropped and each of their unfinished sequences drops its pending tokens,
        releases its blocks and goes back to the front of the waiting queue, in order, to be recomputed. The
        host tier's copies may be missing too: swapped-out sequences are recomputed and its prefix cache is
        dropped."""
        seqs: dict[int, Sequence] = {}
        for step in self._inflight:
            self.block_manager.drop_hashes(step.hashes)
            for seq in step.seqs:
                if seq.status != SequenceStatus.FINISHED:
                    seqs.setdefault(id(seq), seq)
        self._inflight.clear()
        self._next_plan = set()
        self.running = [s for s in self.running if id(s) not in seqs]
        self.waiting = deque(s for s in self.waiting if id(s) not in seqs)
        for seq in reversed(list(seqs.values())):
            while seq.token_ids[-1] < 0:
                seq.token_ids.pop()
            self.block_manager.free(seq)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
            self._requeue(seq)
        for seq in self.waiting:
            if seq.host_blocks:
                self.block_manager.free(seq)
                seq.num_computed_tokens = 0
        self.block_manager.drop_host_copies()
