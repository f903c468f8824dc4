"""Data parallelism: ``data_parallel_size`` engine replicas driven by one controller (docs/data_parallel.md).

Each replica is a whole ``LLMEngine`` (its own scheduler, block manager and KV cache) whose runner owns its own
``tensor_parallel_size`` devices. A request goes to the replica with the fewest outstanding tokens (prompt plus
``max_tokens`` of every sample, of its unfinished requests; ties to the lowest index), so the placement depends
only on the order of the requests and is the same on every process and every run. ``step`` steps every replica
that has work in turn: each replica launches its next step before it waits for its oldest one, so the replicas'
device work overlaps while the host serves the others.

Under ``jax.distributed`` every process runs this engine with the same requests. Each process builds every
replica's host state (so every process places and validates requests the same way) but steps only the
replicas on its own devices; a replica on another process's devices is a ``RemoteReplica``. When its replicas
are idle, a process shares the final outputs it holds with all others (``exchange``: a list in, every
process's lists out), so every process returns every output. Requests finish at that exchange on every
process at once, which keeps the replicas' loads, and so the placement of later requests, the same everywhere.

The replicas share one seed generator: a request without ``SamplingParams.seed`` draws its per-sample seeds in
the order requests are added, as with one engine, so seeded and unseeded outputs do not depend on the replica
count or on which replica served a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from itertools import zip_longest
from typing import Any

from ..outputs import RequestOutput
from . import metrics as _metrics
from .engine import LLMEngine
from .stats import EngineStats


class DataParallelEngine:
    """``LLMEngine``'s request API over several replicas (``engines``, one per data-parallel rank)."""

    def __init__(self, engines: list[LLMEngine],
                 exchange: Callable[[list[RequestOutput]], list[list[RequestOutput]]] | None = None) -> None:
        if len(engines) < 2:
            raise ValueError(f"DataParallelEngine needs at least 2 engines, got {len(engines)}")
        self.engines = list(engines)
        self._local = [not isinstance(e.runner, RemoteReplica) for e in self.engines]
        if not any(self._local):
            raise ValueError("DataParallelEngine: no replica runs on this process's devices")
        self._exchange = exchange
        self._held: list[RequestOutput] = []  # final outputs of local replicas, until the next exchange
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
        """One step of every local replica with unfinished requests; their outputs, replica 0's first. With an
        ``exchange``, final outputs are held until the local replicas are idle, then every process's are
        returned (the exchange is a collective: every process reaches it with the same requests outstanding)."""
        results: list[RequestOutput] = []
        busy = [e for e, local in zip(self.engines, self._local) if local and e.has_unfinished_requests()]
        for engine in busy:
            results += engine.step()
        if self._exchange is not None:
            self._held += [out for out in results if out.finished]
            results = [out for out in results if not out.finished]
            if not busy and self._owner:
                results += self._share_held()
        for out in results:
            if out.finished:
                self._forget(out.request_id)
        return results

    def _share_held(self) -> list[RequestOutput]:
        """Every process's held final outputs (one per request: a replica over several processes gives its
        outputs on each); the remote replicas' host state of those requests is dropped."""
        gathered = {out.request_id: out for outs in self._exchange(self._held) for out in outs}
        self._held = []
        missing = set(self._owner) - set(gathered)
        if missing:
            raise RuntimeError(f"data-parallel exchange: no process returned requests {sorted(missing)}")
        for rid in gathered:
            engine = self.engines[self._owner[rid]]
            if not self._local[self._owner[rid]]:
                engine.abort_request(rid)
        return list(gathered.values())

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
    def vocab_size(self) -> int:
        return self.engines[0].vocab_size

    @property
    def max_model_len(self) -> int:
        return self.engines[0].max_model_len

    @property
    def block_manager(self):
        """Replica 0's (the replicas' caches have the same size; what request checks compare against)."""
        return self.engines[0].block_manager

    @property
    def model_config(self):
        return self.engines[0].model_config

    @property
    def async_scheduling(self) -> bool:
        return self.engines[0].async_scheduling

    @property
    def runner(self):
        """The first local replica's runner (every replica serves the same weights; ``runners`` has them all)."""
        return self.runners[0]

    @property
    def runners(self) -> list[Any]:
        """The runners of the replicas on this process's devices."""
        return [e.runner for e, local in zip(self.engines, self._local) if local]

    @property
    def stats(self) -> EngineStats:
        """The replicas' counters summed."""
        local = [e for e, is_local in zip(self.engines, self._local) if is_local]
        return EngineStats(**{f.name: _summed([getattr(e.stats, f.name) for e in local]) for f in fields(EngineStats)})

    def get_metrics(self) -> list[_metrics.Metric]:
        """Every replica's metrics, labelled ``engine="<rank>"`` (as vLLM labels its data-parallel engines)."""
        return [m for e, local in zip(self.engines, self._local) if local for m in e.get_metrics()]

    def reset_prefix_cache(self) -> bool:
        done = [engine.reset_prefix_cache() for engine in self.engines]  # every replica, no short circuit
        return all(done)


class RemoteReplica:
    """The runner slot of a replica whose devices belong to another process: its requests are placed and
    validated here but run there (their outputs arrive through the exchange)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def execute(self, batch: Any) -> Any:
        raise RuntimeError(f"data-parallel replica {self.rank} runs on another process's devices")

    def propose_drafts(self, items: Any) -> Any:  # draft-model speculation: proposed where the replica runs
        raise RuntimeError(f"data-parallel replica {self.rank} runs on another process's devices")


def _summed(values: list) -> Any:
    """The replicas' values of one counter summed; per-position counters (lists) position by position."""
    if values and isinstance(values[0], list):
        return [sum(column) for column in zip_longest(*values, fillvalue=0)]
    return sum(values)
