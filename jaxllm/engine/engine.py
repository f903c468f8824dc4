"""LLMEngine: requests in, RequestOutputs out, one scheduler step at a time (host side, no jax).

    engine.add_request("0", "Hello, my name is", SamplingParams(max_tokens=32))  # or token ids, a prompt dict
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished: ...  # CUMULATIVE / DELTA requests also return unfinished outputs (output_kind)

Each ``step()`` is ``Scheduler.schedule()`` -> ``runner.execute(batch)`` -> ``Scheduler.update()``. The
runner is duck-typed: ``execute(ScheduledBatch) -> RunnerOutput`` (see ``jaxllm/engine/batch.py``).

With ``async_scheduling`` and a runner that also has ``dispatch(batch) -> handle`` and ``fetch(handle) ->
RunnerOutput``, a step overlaps host and device work: it schedules and dispatches step N+1, then waits for
step N's tokens and applies them, so the host's scheduling, input packing and output processing run while
the device computes (see the scheduler's docstring for the placeholders this needs). Outputs are the same.
Every request is validated in ``add_request``, before any device work, so a bad one raises and the
engine keeps working.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..config_rope import prefix_cache_regime
from ..inputs import prompt_to_ids, split_cache_salt
from ..outputs import RequestMetrics, RequestOutput
from ..pooling.outputs import PoolingOutput, PoolingRequestOutput
from ..pooling_params import PoolingParams
from ..sampling_params import RequestOutputKind, SamplingParams
from ..spec_decode import SpeculativeConfig
from ..structured_outputs.grammar import GrammarCompiler
from ..structured_outputs.params import StructuredOutputsConfig
from . import metrics as _metrics
from .accessors import EngineAccessors
from .block_manager import BlockManager
from .constrained_steps import ConstrainedSteps
from .detokenizer import TokenizerView
from .host_tier import HostTier, PreemptionCost
from .request_checks import check_params, check_prompt, check_request_options, truncate_prompt
from .request_sequences import make_sequences
from .request_state import RequestState
from .scheduler import Scheduler
from .stat_logger import StatLogger
from .stats import EngineStats

# the scheduling view of a pooling request: its prompt, then done (the runner pools instead of sampling). It
# has one output, when it finishes (FINAL_ONLY): a streaming request is checked for news at every step
_POOLING_SAMPLING_PARAMS = SamplingParams(max_tokens=1, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)


class LLMEngine(EngineAccessors, ConstrainedSteps):
    """Continuous-batching engine over a paged KV cache of ``num_blocks`` x ``block_size`` tokens.

    ``eos_token_ids``: the first id is the primary EOS (finish_reason "stop", stop_reason None); further
    ids (e.g. generation_config's extra EOS ids) stop like ``stop_token_ids`` (stop_reason = the id), as in
    vLLM; all are ignored with ``ignore_eos``. ``tokenizer=None`` (skip_tokenizer_init): outputs have
    empty text, and stop strings / bad_words raise. ``seed`` seeds the draw of per-sequence sampling seeds
    for requests without ``SamplingParams.seed``. ``max_logprobs`` caps a request's logprobs / prompt_logprobs
    (vLLM's engine argument). ``log_stats``: throughput and cache usage in the log every few seconds.
    ``scheduling_policy``: "fcfs" or "priority" (see the scheduler). ``model_config`` / ``model_name``: what
    ``model_config`` and the metrics' labels report (its ropes' length regimes also key the prefix cache). ``num_host_blocks`` (> 0: the runner executes the batches'
    ``swap_out`` / ``swap_in`` copies): the host tier's slots, for ``preemption_mode`` ("recompute", "swap" or
    None: the cheaper by ``preemption_cost``) and, with ``host_prefix_cache``, evicted prefix blocks.
    ``speculative_config``: vLLM's dict (or a ``SpeculativeConfig``) for n-gram or draft-model speculative
    decoding; the runner must verify drafts, and propose them for "draft_model" (``propose_drafts``;
    docs/spec_decode.md)."""

    def __init__(
        self,
        runner: Any,
        *,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        vocab_size: int,
        enable_prefix_caching: bool = True,
        eos_token_ids: Iterable[int] | int | None = None,
        tokenizer: Any = None,
        seed: int | None = 0,
        async_scheduling: bool = True,
        max_logprobs: int = 20,
        log_stats: bool = False,
        structured_outputs_config: Any = None,
        scheduling_policy: str = "fcfs",
        model_config: Any = None,
        model_name: str = "",
        num_host_blocks: int = 0,
        host_prefix_cache: bool = False,
        preemption_mode: str | None = None,
        preemption_cost: PreemptionCost | None = None,
        max_loras: int | None = None,
        speculative_config: Any = None,
    ) -> None:
        for name, v in (
            ("num_blocks", num_blocks),
            ("block_size", block_size),
            ("max_num_seqs", max_num_seqs),
            ("max_num_batched_tokens", max_num_batched_tokens),
            ("max_model_len", max_model_len),
            ("vocab_size", vocab_size),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({max_num_batched_tokens}) must be greater than or equal "
                f"to max_num_seqs ({max_num_seqs})."
            )
        if not callable(getattr(runner, "execute", None)):
            raise TypeError(f"runner must have an execute(batch) method, got {type(runner).__name__}")
        if eos_token_ids is None:
            eos = []
        elif isinstance(eos_token_ids, int):
            eos = [eos_token_ids]
        else:
            eos = list(dict.fromkeys(int(t) for t in eos_token_ids))
        if any(not 0 <= t < vocab_size for t in eos):
            raise ValueError(f"eos_token_ids {eos} must be in [0, vocab_size={vocab_size})")
        self.runner = runner
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos)
        self.max_logprobs = max_logprobs
        self._stat_logger = StatLogger() if log_stats else None
        self.tokenizer = tokenizer
        self._view = TokenizerView(tokenizer) if tokenizer is not None else None
        if host_prefix_cache and not (num_host_blocks and enable_prefix_caching):
            raise ValueError("host_prefix_cache needs a host tier (swap_space > 0) and enable_prefix_caching")
        host = HostTier(num_host_blocks, host_prefix_cache) if num_host_blocks else None
        rope_regime = prefix_cache_regime((getattr(model_config, "rope", None), getattr(model_config, "rope_local", None)))
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching, host, rope_regime)
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            decode_token=self._view.decode_token if self._view else None,
            policy=scheduling_policy,
            preemption_mode=preemption_mode,
            preemption_cost=preemption_cost,
            max_loras=max_loras,
            speculative_config=SpeculativeConfig.from_dict(speculative_config),
            drafter=getattr(runner, "propose_drafts", None),  # draft-model speculation (a ModelRunner's)
            spec_cost=getattr(runner, "spec_cost", None),  # the automatic speculation rule's step costs
        )
        self.max_loras = max_loras  # None: LoRA is off; else the runner has check_lora(request)
        self.scheduling_policy = scheduling_policy
        self.model_config = model_config
        self._metric_labels = {"model_name": str(model_name), "engine": "0"}
        self.request_stats = _metrics.RequestStats()
        self.async_scheduling = bool(async_scheduling) and all(
            callable(getattr(runner, m, None)) for m in ("dispatch", "fetch"))
        self._steps: deque = deque()  # (batch, runner handle or output), oldest first
        self.structured_outputs_config = StructuredOutputsConfig.coerce(structured_outputs_config)
        self._grammars: GrammarCompiler | None = None  # None: the tokenizer cannot serve structured outputs
        self._prepare_grammars()
        self._rng = np.random.default_rng(seed)
        self._requests: dict[str, RequestState] = {}
        self._streaming: dict[str, RequestState] = {}  # unfinished requests with output_kind != FINAL_ONLY
        self._next_seq_id = 0
        self.stats = EngineStats()

    # ---- requests --------------------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt: Any,
        params: SamplingParams | PoolingParams | None = None,
        arrival_time: float | None = None,
        lora_request: Any = None,
        tokenization_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> None:
        """Queue a request (vLLM's ``LLMEngine.add_request``); it makes ``params.n`` sequences.

        ``prompt`` is what ``LLM.generate`` takes for one prompt: a str (tokenized here, with
        ``tokenization_kwargs``), a TextPrompt / TokensPrompt dict (its ``cache_salt`` keys the prefix cache), or token
        ids (a list or 1-D array of ints).
        Raises ValueError/TypeError naming the request for bad input (empty or too long prompt, ids outside the
        vocabulary, a request that could never fit the KV cache, options that need a tokenizer when there is
        none, a priority without ``scheduling_policy="priority"``), before anything is queued.

        A (verified) ``PoolingParams`` makes it a pooling request: one sequence, prefill only, that finishes when
        its whole prompt ran, with the runner's pooled data as a ``PoolingRequestOutput``; its blocks are freed
        then (no KV is kept for it beyond the prefix cache)."""
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__} ({request_id!r})")
        if request_id in self._requests:
            raise ValueError(f"request {request_id!r} is already running; request ids must be unique")
        pooling_params = params if isinstance(params, PoolingParams) else None
        if pooling_params is not None:  # one shared, never-mutated SamplingParams: nothing is sampled
            params = _POOLING_SAMPLING_PARAMS
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(
                f"request {request_id!r}: sampling_params must be a SamplingParams, "
                f"got {type(params).__name__}"
            )
        check_request_options(request_id, priority, self.scheduling_policy)
        if lora_request is not None:
            self.check_lora_request(lora_request)
        cache_salt, prompt = split_cache_salt(f"request {request_id!r}", prompt)
        text, ids = prompt_to_ids(f"request {request_id!r}", prompt, self.tokenizer, tokenization_kwargs)
        ids = truncate_prompt(request_id, ids, params.truncate_prompt_tokens, self.max_model_len)
        ids = check_prompt(request_id, ids, self.vocab_size, self.max_model_len, generates=pooling_params is None)
        max_tokens = check_params(request_id, params, len(ids), tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                                  max_model_len=self.max_model_len, block_manager=self.block_manager,
                                  max_logprobs=self.max_logprobs, eos_token_ids=tuple(self.eos_token_ids))
        arrival = time.time() if arrival_time is None else float(arrival_time)

        seqs = make_sequences(self._next_seq_id, request_id, ids, params, max_tokens=max_tokens,
                              eos_token_ids=list(self.eos_token_ids), rng=self._rng, view=self._view,
                              grammars=self._new_grammar_states(request_id, params), priority=priority,
                              arrival=arrival, lora_request=lora_request, cache_salt=cache_salt)
        self._next_seq_id += len(seqs)
        if pooling_params is not None:
            seqs[0].pooling_params = pooling_params
            seqs[0].read_prefix_cache = not pooling_params.skip_reading_prefix_cache
        req = self._requests[request_id] = RequestState(
            request_id, text, ids, params, seqs, RequestMetrics(arrival), len(seqs)
        )
        if req.streams:
            self._streaming[request_id] = req
        for seq in seqs:
            self.scheduler.add(seq)
        self.stats.num_prompt_tokens += len(ids)

    def abort_request(self, request_id: str | Iterable[str]) -> None:
        """Drop unfinished request(s); unknown ids are ignored (as vLLM). No output is returned for them; they
        count in the ``vllm:request_success`` metric under ``finished_reason="abort"``."""
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            req = self._requests.pop(rid, None)
            self._streaming.pop(rid, None)
            if req is not None:
                self.scheduler.abort(req.seqs)
                self.request_stats.finished["abort"] += 1

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def outstanding_tokens(self, request_id: str) -> int:
        """Tokens an unfinished request may still take: its prompt plus each sample's ``max_tokens`` (what the
        data-parallel engine balances)."""
        req = self._requests[request_id]
        return len(req.prompt_token_ids) + sum(seq.max_tokens for seq in req.seqs)

    def get_num_unfinished_requests(self) -> int:
        return len(self._requests)

    # ---- step ------------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; returns the outputs it produced: requests that finished in it (all their
        samples done), and, for requests whose ``output_kind`` is CUMULATIVE or DELTA, an unfinished output
        for each one that got new tokens."""
        if not self._requests:
            self._drain()
            return []
        try:
            if not self._steps:
                self._launch(self._schedule_required(), required=True)
            finished = None
            if self.async_scheduling and self.scheduler.can_overlap():
                batch = self.scheduler.schedule()
                if any(s.sample and s.grammar is not None for s in batch.seqs):
                    finished = self._launch_constrained(batch)
                else:
                    self._launch(batch, required=False)
            if finished is None:
                finished = self._resolve_oldest()
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
        self.stats.num_generated_tokens = self.scheduler.num_generated_tokens
        self.stats.num_preemptions = self.scheduler.num_preemptions
        host = self.block_manager.host
        if host is not None:
            self.stats.num_swap_preemptions = self.scheduler.num_swap_preemptions
            self.stats.num_swapped_out_blocks = host.num_swapped_out
            self.stats.num_swapped_in_blocks = host.num_swapped_in
            self.stats.num_host_prefix_cache_hits = host.prefix_hits
        spec, st = self.scheduler.speculation, self.stats
        if spec is not None:
            st.spec_decode_num_drafts, st.spec_decode_num_draft_tokens = spec.num_drafts, spec.num_draft_tokens
            st.spec_decode_num_accepted_tokens = spec.num_accepted_tokens
            st.spec_decode_num_accepted_tokens_per_pos = list(spec.num_accepted_tokens_per_pos)
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
