"""LLMEngine: requests in, finished RequestOutputs out, one scheduler step at a time (host side, no jax).

    engine.add_request("0", prompt_token_ids, SamplingParams(max_tokens=32))
    while engine.has_unfinished_requests():
        for out in engine.step(): ...

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

import dataclasses
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..outputs import CompletionOutput, RequestMetrics, RequestOutput
from ..pooling.outputs import PoolingOutput, PoolingRequestOutput
from ..sampling_params import SamplingParams
from .block_manager import BlockManager
from .detokenizer import IncrementalDetokenizer, TokenizerView
from .request_checks import check_params, check_prompt
from .scheduler import Scheduler
from .sequence import Sequence
from .stat_logger import StatLogger

_SEED_MOD = 2**31  # per-sequence rng seeds fit int32 (and uint32)
# the scheduling view of a pooling request: its prompt, then done (the runner pools instead of sampling)
_POOLING_SAMPLING_PARAMS = SamplingParams(max_tokens=1, detokenize=False)


@dataclasses.dataclass
class EngineStats:
    num_steps: int = 0
    num_scheduled_tokens: int = 0  # prefill + decode tokens computed (recomputation included)
    num_generated_tokens: int = 0  # tokens sampled
    num_preemptions: int = 0
    num_prompt_tokens: int = 0  # of added requests (each child counted once per request)
    num_cached_tokens: int = 0  # prefix-cache hit tokens reported by finished sequences


@dataclasses.dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    metrics: RequestMetrics
    num_unfinished: int


class LLMEngine:
    """Continuous-batching engine over a paged KV cache of ``num_blocks`` x ``block_size`` tokens.

    ``eos_token_ids``: the first id is the primary EOS (finish_reason "stop", stop_reason None); further
    ids (e.g. generation_config's extra EOS ids) stop like ``stop_token_ids`` (stop_reason = the id), as in
    vLLM; all are ignored with ``ignore_eos``. ``tokenizer=None`` (skip_tokenizer_init): outputs have
    empty text, and stop strings / bad_words raise. ``seed`` seeds the draw of per-sequence sampling seeds
    for requests without ``SamplingParams.seed``. ``max_logprobs`` caps a request's logprobs / prompt_logprobs
    (vLLM's engine argument). ``log_stats``: throughput and cache usage in the log every few seconds."""

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
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=max_model_len,
            decode_token=self._view.decode_token if self._view else None,
        )
        self.async_scheduling = bool(async_scheduling) and all(
            callable(getattr(runner, m, None)) for m in ("dispatch", "fetch"))
        self._steps: deque = deque()  # (batch, runner handle or output), oldest first
        self._rng = np.random.default_rng(seed)
        self._requests: dict[str, _Request] = {}
        self._next_seq_id = 0
        self.stats = EngineStats()

    # ---- requests --------------------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: Any,
        sampling_params: SamplingParams | None = None,
        prompt: str | None = None,
        arrival_time: float | None = None,
        pooling_params: Any = None,
    ) -> None:
        """Queue a request; it makes ``sampling_params.n`` sequences. Raises ValueError/TypeError naming
        the request for bad input (empty or too long prompt, ids outside the vocabulary, a request that
        could never fit the KV cache, options that need a tokenizer when there is none).

        ``pooling_params`` (a verified ``PoolingParams``) makes it a pooling request instead: one sequence,
        prefill only, that finishes when its whole prompt ran, with the runner's pooled data as a
        ``PoolingRequestOutput``; its blocks are freed then (no KV is kept for it beyond the prefix cache)."""
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str, got {type(request_id).__name__} ({request_id!r})")
        if request_id in self._requests:
            raise ValueError(f"request {request_id!r} is already running; request ids must be unique")
        if pooling_params is not None:  # one shared, never-mutated SamplingParams: nothing is sampled
            sampling_params = _POOLING_SAMPLING_PARAMS
        params = SamplingParams() if sampling_params is None else sampling_params
        if not isinstance(params, SamplingParams):
            raise TypeError(
                f"request {request_id!r}: sampling_params must be a SamplingParams, "
                f"got {type(params).__name__}"
            )
        ids = check_prompt(request_id, prompt_token_ids, self.vocab_size, self.max_model_len,
                           generates=pooling_params is None)
        max_tokens = check_params(request_id, params, len(ids), tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                                  max_model_len=self.max_model_len, block_manager=self.block_manager,
                                  max_logprobs=self.max_logprobs)

        eos_ids = frozenset() if params.ignore_eos else frozenset(self.eos_token_ids[:1])
        stop_ids = frozenset(params.stop_token_ids) | (
            frozenset() if params.ignore_eos else frozenset(self.eos_token_ids[1:])
        )
        banned = tuple(
            dict.fromkeys([*(() if params.ignore_eos else self.eos_token_ids), *params.stop_token_ids])
        )
        needs_history = (
            params.repetition_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
            or any(len(w) > 1 for w in params.bad_words_token_ids or ())
        )
        seqs = []
        for index in range(params.n):
            if params.seed is not None:
                rng_seed = (params.seed + index) % _SEED_MOD
            else:
                rng_seed = int(self._rng.integers(0, _SEED_MOD))
            detok = None
            if self._view is not None and params.detokenize:
                detok = IncrementalDetokenizer(self._view, ids, params)
            seqs.append(
                Sequence(
                    self._next_seq_id,
                    request_id,
                    index,
                    ids,
                    params,
                    max_tokens=max_tokens,
                    rng_seed=rng_seed,
                    eos_token_ids=eos_ids,
                    stop_token_ids=stop_ids,
                    banned_token_ids=banned,
                    want_prompt_logprobs=params.prompt_logprobs is not None and index == 0,
                    detokenizer=detok,
                    needs_history=needs_history,
                )
            )
            self._next_seq_id += 1
        if pooling_params is not None:
            seqs[0].pooling_params = pooling_params
            seqs[0].read_prefix_cache = not getattr(pooling_params, "skip_reading_prefix_cache", True)
        arrival = time.time() if arrival_time is None else float(arrival_time)
        self._requests[request_id] = _Request(
            request_id, prompt, ids, params, seqs, RequestMetrics(arrival), len(seqs)
        )
        for seq in seqs:
            self.scheduler.add(seq)
        self.stats.num_prompt_tokens += len(ids)

    def abort_request(self, request_id: str | Iterable[str]) -> None:
        """Drop unfinished request(s); unknown ids are ignored (as vLLM). No output is returned for them."""
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            req = self._requests.pop(rid, None)
            if req is not None:
                self.scheduler.abort(req.seqs)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def get_num_unfinished_requests(self) -> int:
        return len(self._requests)

    # ---- step ------------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; returns the requests that finished in it (all their samples done)."""
        if not self._requests:
            self._drain()
            return []
        try:
            if not self._steps:
                self._launch(self.scheduler.schedule(), required=True)
            if self.async_scheduling and self.scheduler.can_overlap():
                self._launch(self.scheduler.schedule(), required=False)
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
                results.append(self._make_output(req))
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
        run = self.runner.dispatch if self.async_scheduling else self.runner.execute
        self._steps.append((batch, run(batch)))
        self.stats.num_steps += 1
        self.stats.num_scheduled_tokens += batch.num_tokens

    def _resolve_oldest(self):
        batch, handle = self._steps.popleft()
        output = self.runner.fetch(handle) if self.async_scheduling else handle
        finished = self.scheduler.update(batch, output)
        self.stats.num_generated_tokens = self.scheduler.num_generated_tokens
        self.stats.num_preemptions = self.scheduler.num_preemptions
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

    def _make_output(self, req: _Request) -> RequestOutput | PoolingRequestOutput:
        now = time.time()
        seqs = req.seqs
        if seqs[0].pooling_params is not None:
            self.stats.num_cached_tokens += seqs[0].num_cached_tokens or 0
            return PoolingRequestOutput(req.request_id, PoolingOutput(seqs[0].pooled), req.prompt_token_ids, True)
        outputs = [
            CompletionOutput(
                index=s.index,
                text=s.text,
                token_ids=s.output_token_ids,
                cumulative_logprob=s.cumulative_logprob,
                logprobs=s.logprobs,
                finish_reason=s.finish_reason,
                stop_reason=s.stop_reason,
            )
            for s in seqs
        ]
        m = req.metrics
        times = [s.first_scheduled_time for s in seqs if s.first_scheduled_time is not None]
        m.first_scheduled_time = min(times) if times else None
        times = [s.first_token_time for s in seqs if s.first_token_time is not None]
        m.first_token_time = min(times) if times else None
        times = [s.last_token_time for s in seqs if s.last_token_time is not None]
        m.last_token_time = max(times) if times else None
        m.finished_time = now
        self.stats.num_cached_tokens += sum(s.num_cached_tokens or 0 for s in seqs)
        return RequestOutput(
            request_id=req.request_id,
            prompt=req.prompt,
            prompt_token_ids=req.prompt_token_ids,
            prompt_logprobs=seqs[0].prompt_logprobs,
            outputs=outputs,
            finished=True,
            metrics=m,
            num_cached_tokens=seqs[0].num_cached_tokens,
        )
