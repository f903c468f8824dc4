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

from ..inputs import is_embeds_prompt, prompt_embeds_array, prompt_to_ids, split_cache_salt
from ..outputs import RequestMetrics
from ..pooling_params import PoolingParams
from ..sampling_params import RequestOutputKind, SamplingParams
from ..spec_decode import SpeculativeConfig
from ..structured_outputs.grammar import GrammarCompiler
from ..structured_outputs.params import StructuredOutputsConfig
from . import metrics as _metrics
from .accessors import EngineAccessors
from .constrained_steps import ConstrainedSteps
from .detokenizer import TokenizerView
from .engine_setup import check_engine_sizes, eos_id_list, make_block_manager
from .host_tier import PreemptionCost
from .request_checks import (
    check_embeds_params,
    check_params,
    check_prompt,
    check_request_options,
    truncate_prompt,
)
from .request_sequences import make_sequences
from .request_state import RequestState
from .scheduler import Scheduler
from .stat_logger import StatLogger
from .stats import EngineStats
from .step_loop import StepLoop

# the scheduling view of a pooling request: its prompt, then done (the runner pools instead of sampling). It
# has one output, when it finishes (FINAL_ONLY): a streaming request is checked for news at every step
_POOLING_SAMPLING_PARAMS = SamplingParams(max_tokens=1, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)


class LLMEngine(EngineAccessors, ConstrainedSteps, StepLoop):
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
        enable_prompt_embeds: bool = False,
    ) -> None:
        check_engine_sizes(runner, num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
                           max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                           vocab_size=vocab_size)
        eos = eos_id_list(eos_token_ids, vocab_size)
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
        self.block_manager = make_block_manager(num_blocks, block_size, enable_prefix_caching, num_host_blocks,
                                                host_prefix_cache, model_config)
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
        # EmbedsPrompt requests (the runner feeds their embeddings): the hidden size they must have, or None (off)
        self.prompt_embeds_size = model_config.hidden_size if enable_prompt_embeds else None
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
        ``tokenization_kwargs``), a TextPrompt / TokensPrompt / EmbedsPrompt dict (its ``cache_salt`` keys the prefix
        cache; an EmbedsPrompt needs ``enable_prompt_embeds``), or token ids (a list or 1-D array of ints).
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
        text, ids, embeds = self._prompt_inputs(request_id, prompt, params, pooling_params, tokenization_kwargs)
        ids = check_prompt(request_id, ids, self.vocab_size, self.max_model_len, generates=pooling_params is None)
        max_tokens = check_params(request_id, params, len(ids), tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                                  max_model_len=self.max_model_len, block_manager=self.block_manager,
                                  max_logprobs=self.max_logprobs, eos_token_ids=tuple(self.eos_token_ids))
        arrival = time.time() if arrival_time is None else float(arrival_time)

        seqs = make_sequences(self._next_seq_id, request_id, ids, params, max_tokens=max_tokens,
                              eos_token_ids=list(self.eos_token_ids), rng=self._rng, view=self._view,
                              grammars=self._new_grammar_states(request_id, params), priority=priority,
                              arrival=arrival, lora_request=lora_request, cache_salt=cache_salt,
                              prompt_embeds=embeds)
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

    def _prompt_inputs(self, request_id: str, prompt: Any, params: SamplingParams, pooling_params: Any,
                       tokenization_kwargs: dict[str, Any] | None) -> tuple[str | None, list[int], Any]:
        """(text, token ids truncated by ``truncate_prompt_tokens``, EmbedsPrompt rows or None) of a prompt.
        An EmbedsPrompt's ids are placeholders (0, as vLLM's) standing for its rows' positions."""
        embeds = None
        if is_embeds_prompt(prompt):
            embeds = prompt_embeds_array(f"request {request_id!r}", prompt, self.prompt_embeds_size)
            check_embeds_params(request_id, params, pooling_params)
            text, ids = None, [0] * len(embeds)
        else:
            text, ids = prompt_to_ids(f"request {request_id!r}", prompt, self.tokenizer, tokenization_kwargs)
        ids = truncate_prompt(request_id, ids, params.truncate_prompt_tokens, self.max_model_len)
        if embeds is not None and len(embeds) > len(ids):  # truncated: the last rows stay
            embeds = embeds[len(embeds) - len(ids):]
        return text, ids, embeds

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
