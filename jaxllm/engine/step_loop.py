"""The engine's step loop: ``step()`` launches scheduled batches on the runner, resolves the oldest one in
flight (``Scheduler.update``) and turns finished requests into outputs. With ``async_scheduling`` up to two
steps are in flight, so the host schedules step N+1 while the device computes step N. Mixed into
``LLMEngine`` (host side, no jax)."""

from __future__ import annotations

from ..outputs import RequestOutput
from ..pooling.outputs import PoolingOutput, PoolingRequestOutput
from .request_state import RequestState


class StepLoop:
    """Needs the engine's ``runner``, ``scheduler``, ``block_manager``, ``async_scheduling``, ``_steps``,
    ``_requests``, ``_streaming``, ``stats``, ``request_stats``, ``_stat_logger``, ``num_blocks`` and the
    constrained-step methods (``ConstrainedSteps``)."""

    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; returns the outputs it produced: requests that finished in it (all their
        samples done), and, for requests whose ``output_kind`` is CUMULATIVE or DELTA, an unfinished output
        for each one that got new tokens."""
        if not self._requests:
            self._drain()
            return []
        try:
            finished = self._advance()
        except BaseException:
            # The K/V of the steps in flight may not have been written: forget the prefix-cache hashes
            # registered for them and requeue their sequences for recomputation. The engine stays usable:
            # step() again, or abort the requests.
            self._steps.clear()
            self.scheduler.reset_inflight()
            raise
        if self._stat_logger is not None:
            self._stat_logger.maybe_log(self.stats, self.scheduler, self.block_manager)
        results = []
        for seq in finished:
            req = self._requests[seq.request_id]
            req.num_unfinished -= 1
            if req.num_unfinished == 0:
                del self._requests[seq.request_id]
                self._streaming.pop(seq.request_id, None)
                results.append(self._make_output(req))
        results += [r.make_output(False) for r in self._streaming.values() if r.has_news()]
        if not self._requests:
            self._drain()
        return results

    def _advance(self) -> list:
        """Launch what the step needs (a first batch when none is in flight; with asynchronous scheduling, the
        next one too) and resolve the oldest step; returns the sequences it finished."""
        if not self._steps:
            self._launch(self._schedule_required(), required=True)
        if self.async_scheduling and self.scheduler.can_overlap():
            batch = self.scheduler.schedule()
            if any(s.sample and s.grammar is not None for s in batch.seqs):
                return self._launch_constrained(batch)
            self._launch(batch, required=False)
        return self._resolve_oldest()

    def _launch(self, batch, required: bool) -> None:
        if not batch.seqs:
            if required:  # cannot happen for validated requests; fail loudly rather than spin
                raise RuntimeError(
                    f"scheduler made no progress with {len(self._requests)} unfinished requests "
                    f"({self.block_manager.num_free_blocks}/{self.num_blocks} free blocks)"
                )
            return
        self._fill_grammar_bitmasks(batch)
        run = self.runner.dispatch if self.async_scheduling else self.runner.execute
        self._steps.append((batch, run(batch)))
        self._count_step(batch)

    def _count_step(self, batch) -> None:
        self.stats.num_steps += 1
        self.stats.num_scheduled_tokens += batch.num_tokens
        self.request_stats.iteration_tokens.observe(batch.num_tokens)

    def _resolve_oldest(self, next_masks=None):
        """Fetch the oldest step in flight and apply it (``Scheduler.update``, which also fills ``next_masks``,
        the next step's grammar bitmasks, once the grammars consumed this step's tokens)."""
        batch, handle = self._steps.popleft()
        output = self.runner.fetch(handle) if self.async_scheduling else handle
        finished = self.scheduler.update(batch, output, next_masks)
        self.stats.copy_counters(self.scheduler, self.block_manager.host)
        return finished

    def _drain(self) -> None:
        """No request is left: wait for the steps still in flight (their tokens are all dropped)."""
        try:
            while self._steps:
                self._resolve_oldest()
        except BaseException:
            self._steps.clear()
            self.scheduler.reset_inflight()
            raise

    def _make_output(self, req: RequestState) -> RequestOutput | PoolingRequestOutput:
        seqs = req.seqs
        if seqs[0].pooling_params is not None:
            self.stats.num_cached_tokens += seqs[0].num_cached_tokens or 0
            pooled = seqs[0].pooled  # a runner's PoolingOutput, or its bare data
            pooled = pooled if isinstance(pooled, PoolingOutput) else PoolingOutput(pooled)
            return PoolingRequestOutput(req.request_id, pooled, req.prompt_token_ids,
                                        seqs[0].num_cached_tokens or 0, True)
        out = req.make_output(finished=True)
        self.stats.num_cached_tokens += sum(s.num_cached_tokens or 0 for s in seqs)
        self.request_stats.record(out.metrics, len(req.prompt_token_ids), sum(s.num_output_tokens for s in seqs),
                                  [s.finish_reason for s in seqs])
        return out
