"""The engine's steps with structured outputs: grammar states per request, and the launch order that lets a
step's forward run while the host fills its grammar bitmasks from the previous step's tokens
(docs/structured_outputs.md). Mixed into ``LLMEngine``."""

from __future__ import annotations

import time

from ..sampling_params import SamplingParams
from ..structured_outputs.grammar import GrammarCompiler, grammar_capable
from ..structured_outputs.step import HOST_SECONDS


class ConstrainedSteps:
    """Needs the engine's ``_grammars``, ``tokenizer``, ``vocab_size``, ``eos_token_ids``,
    ``structured_outputs_config``, ``runner``, ``scheduler``, ``_steps`` and its step methods."""

    def _prepare_grammars(self) -> None:
        """At start-up (and after set_tokenizer): with a tokenizer structured outputs can use, create the
        grammar compiler and start building llguidance's tokenizer in the background, so that the first
        constrained request finds it ready."""
        self._grammars = None
        if grammar_capable(self.tokenizer):
            self._grammars = GrammarCompiler(self.tokenizer, self.vocab_size, self.eos_token_ids,
                                             self.structured_outputs_config)
            self._grammars.prepare()

    def _new_grammar_states(self, request_id: str, params: SamplingParams) -> list:
        """One GrammarState per child (None without structured outputs); validates the spec now."""
        so = params.structured_outputs
        if so is None:
            return [None] * params.n
        if self._grammars is None:  # a tokenizer it cannot use: new_state raises the ValueError naming it
            self._grammars = GrammarCompiler(self.tokenizer, self.vocab_size, self.eos_token_ids,
                                             self.structured_outputs_config)
        prepare = getattr(self.runner, "prepare_structured_outputs", None)
        if prepare is not None:
            prepare(params)  # the runner's programs for these constrained rows, unless compiled (cheap then)
        return [self._grammars.new_state(request_id, so) for _ in range(params.n)]

    def _schedule_required(self):
        """The next batch when no step is in flight; waits for a compiling grammar if nothing else can run."""
        batch = self.scheduler.schedule()
        while not batch.seqs and self.scheduler.waiting_grammars():
            self.scheduler.waiting_grammars()[0].wait()
            batch = self.scheduler.schedule()
        return batch

    def _launch_constrained(self, batch) -> list:
        """Step N+1 has constrained rows, whose masks need the tokens of step N, still in flight: launch step
        N+1's forward (a runner with ``launch_sampler``), apply step N's tokens (the grammars advance and then
        fill step N+1's masks on the grammar thread while the scheduler's loop runs), then launch step N+1's
        sampler. The forward runs on the device meanwhile. Returns the sequences step N finished."""
        launch_sampler = getattr(self.runner, "launch_sampler", None)
        if launch_sampler is None:  # a runner that samples in dispatch: wait for step N first
            finished = self._resolve_oldest()
            self._launch(batch, required=False)
            return finished
        t0 = time.perf_counter()
        handle = self.runner.dispatch(batch, sample=False)
        self._steps.append((batch, handle))
        self._count_step(batch)
        masks = self._grammars.mask_fill(batch) if self._grammars is not None else None
        t1 = time.perf_counter()
        finished = self._resolve_oldest(next_masks=masks)
        t2 = time.perf_counter()
        launch_sampler(handle)
        t3 = time.perf_counter()
        HOST_SECONDS["forward_launch"] += t1 - t0
        HOST_SECONDS["resolve"] += t2 - t1  # fetch (device wait included) + Scheduler.update
        HOST_SECONDS["sampler_launch"] += t3 - t2
        return finished

    def _fill_grammar_bitmasks(self, batch) -> None:
        if self._grammars is not None:
            self._grammars.fill_batch(batch)
