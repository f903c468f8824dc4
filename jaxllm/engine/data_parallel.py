"""Data parallelism: ``data_parallel_size`` engine replicas driven by one controller (docs/data_parallel.md).

Each replica is a whole ``LLMEngine`` (its own scheduler, block manager and KV cache) whose runner owns its own
``tensor_parallel_size`` devices. A request goes to the replica with the fewest outstanding tokens (prompt plus
``max_tokens`` of every sample, of its unfinished requests; ties to the lowest index), so the placement depends
only on the order of the requests and is the same on every process and every run. ``step`` steps every replica
that has work in turn: each replica launches its next step before it waits for its oldest one, so the replicas'
device work overlaps while the host serves the others.

The replicas share one seed generator: a request without ``SamplingParams.seed`` draws its per-sample seeds in
the order requests are added, as with one engine, so seeded and unseeded outputs do not depend on the replica
count or on which replica served a request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from jaxllm.engine import metrics as _metrics
from jaxllm.engine.engine import EngineStats, LLMEngine
from jaxllm.outputs import RequestOutput


class DataParallelEngine:
    """``LLMEngine``'s request API over several replicas (``engines``, one per data-parallel rank)."""

    def __init__(self, engines: list[LLMEngine]) -> None:
        if len(engines) < 2:
            raise ValueError(f"DataParallelEngine needs at least 2 engines, got {len(engines)}")
        self.engines = list(engines)
        for rank, engine in enumerate(self.engines):
            engine._rng = self.engines[0]._rng  # one draw order of per-sample seeds (module docstring)
            engine._metric_labels["engine"] = str(rank)
        self._owner: dict[str, int] = {}  # unfinished request id -> replica index
        self._cost: dict[str, int] = {}  # unfinished request id -> its outstanding tokens when added
        self._load = [0] * len(self.engines)

    # ---- requests --------------------------------------------------------------------------------------

    def add_request(self, request_id: str, prompt: Any, params: Any = None, arrival_time: float | None = None,
                    lora_request: Any = None, tokenization_kwargs: dict[str, Any] | None = None,
                    priority: int = 0) -> None:
        """Queue a request on the least-loaded replica (``LLMEngine.add_request``'s arguments and checks)."""
        if request_id in self._owner:
            raise ValueError(f"request {request_id!r} is already running; request ids must be unique")
        rank = min(range(len(self.engines)), key=lambda r: (self._load[r], r))
        engine = self.engines[rank]
        engine.add_request(request_id, prompt, params, arrival_time=arrival_time, lora_request=lora_request,
                           tokenization_kwargs=tokenization_kwargs, priority=priority)
        self._owner[request_id] = rank
        self._cost[request_id] = engine.outstanding_tokens(request_id)
        self._load[rank] += self._cost[request_id]

    def abort_request(self, request_id: str | Iterable[str]) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            if rid in self._owner:
                self.engines[self._owner[rid]].abort_request(rid)
                self._forget(rid)

    def _forget(self, request_id: str) -> None:
        self._load[self._owner.pop(request_id)] -= self._cost.pop(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self._owner)

    def get_num_unfinished_requests(self) -> int:
        return len(self._owner)

    def replica_of(self, request_id: str) -> int:
        """The replica serving an unfinished request."""
        return self._owner[request_id]

    # ---- step ------------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """One step of every replica with unfinished requests; their outputs, replica 0's first."""
        results: list[RequestOutput] = []
        for engine in self.engines:
            if engine.has_unfinished_requests():
                results += engine.step()
        for out in results:
            if out.finished:
                self._forget(out.request_id)
        return results

    # ---- vLLM's engine accessors -----------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.engines[0].tokenizer

    def get_tokenizer(self):
        return self.engines[0].tokenizer

    def set_tokenizer(self, tokenizer: Any) -> None:
        if self._owner:
            raise ValueError(f"set_tokenizer with {len(self._owner)} unfinished requests: finish or abort them")
        for engine in self.engines:
            engine.set_tokenizer(tokenizer)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.engines[0].eos_token_ids

    @property
    def model_config(self):
        return self.engines[0].model_config

    @property
    def async_scheduling(self) -> bool:
        return self.engines[0].async_scheduling

    @property
    def runner(self):
        """Replica 0's runner (every replica serves the same weights; ``runners`` has them all)."""
        return self.engines[0].runner

    @property
    def runners(self) -> list[Any]:
        return [engine.runner for engine in self.engines]

    @property
    def stats(self) -> EngineStats:
        """The replicas' counters summed."""
        return EngineStats(**{f.name: sum(getattr(e.stats, f.name) for e in self.engines) for f in fields(EngineStats)})

    def get_metrics(self) -> list[_metrics.Metric]:
        """Every replica's metrics, labelled ``engine="<rank>"`` (as vLLM labels its data-parallel engines)."""
        return [m for engine in self.engines for m in engine.get_metrics()]

    def reset_prefix_cache(self) -> bool:
        done = [engine.reset_prefix_cache() for engine in self.engines]  # every replica, no short circuit
        return all(done)
