"""``LLM`` methods that control the engine rather than generate (vLLM's names and semantics): prefix cache,
metrics, sleep mode, direct access to the model and the runner, profiling, world size.

One ``LLM`` is one controller process driving every device of its mesh, so vLLM's per-worker lists
(``apply_model``, ``collective_rpc``) have one element per engine replica (``data_parallel_size``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from typing import Any

from jaxllm.call_guard import serialized

logger = logging.getLogger("jaxllm")

SLEEP_TAGS = ("weights", "kv_cache")


# runner methods that replace the served weights: collective_rpc resets the prefix cache after them
_WEIGHT_METHODS = ("reload_weights", "load_model_weights")


class EngineControl:
    """Mixed into ``LLM`` (which owns ``llm_engine``, whose ``runner`` is the ModelRunner)."""

    _asleep: frozenset[str] = frozenset()
    _profile_dir: str | None = None

    def _paged_engine(self, method: str):
        """``llm_engine``, or a ValueError naming ``method`` for a bidirectional encoder (runner="pooling"), which
        runs each batch in one pass without the paged engine, its runner or its caches."""
        if self.llm_engine is None:
            raise ValueError(f"LLM.{method}() is not supported for this encoder model (runner='pooling'): it runs "
                             "without the paged engine, so it has no model runner, KV cache or prefix cache")
        return self.llm_engine

    def _runners(self, method: str) -> list:
        """The model runner of every engine replica (one unless ``data_parallel_size`` > 1)."""
        engine = self._paged_engine(method)
        return list(engine.runners) if hasattr(engine, "runners") else [engine.runner]

    # ---- prefix cache and metrics ------------------------------------------------------------------

    @serialized
    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix (e.g. after changing weights). Returns False, doing nothing, while a
        request holds KV blocks (vLLM's contract), True otherwise."""
        return self._paged_engine("reset_prefix_cache").reset_prefix_cache()

    def get_metrics(self) -> list:
        """A snapshot of vLLM's metrics (``jaxllm.engine.metrics``: Counter, Gauge, Histogram, Vector objects,
        e.g. ``vllm:prompt_tokens``, ``vllm:time_to_first_token_seconds``), aggregated since start-up."""
        return self._paged_engine("get_metrics").get_metrics()

    # ---- sleep mode ----------------------------------------------------------------------------------

    @serialized
    def sleep(self, level: int = 1) -> None:
        """Give device memory back while the LLM is idle. Level 1: the KV cache is freed and the weights are
        copied to host memory; level 2: both are freed (``wake_up`` reads the weights from the checkpoint
        again). The prefix cache is reset (its blocks are gone). Generating raises until ``wake_up``. Needs
        ``LLM(..., enable_sleep_mode=True)``, as in vLLM.

        The buffers are deleted, so their memory goes back to JAX's allocator at once (a device's
        ``memory_stats()["bytes_in_use"]`` drops): other JAX work in this process, such as a training step
        between two rounds of generation, can use it. JAX's GPU allocator keeps its preallocated pool for the
        process; another process gets the memory only when JAX runs without preallocation
        (``XLA_PYTHON_CLIENT_PREALLOCATE=false``)."""
        self._check_sleep_mode()
        if isinstance(level, bool) or level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level!r}")
        engine = self._paged_engine("sleep")
        if engine.has_unfinished_requests():
            raise ValueError(f"cannot sleep with {engine.get_num_unfinished_requests()} unfinished requests; "
                             "finish or abort them first")
        if not engine.reset_prefix_cache():
            raise RuntimeError("the prefix cache could not be reset: some KV blocks are still in use")
        runner = engine.runner
        runner.release_kv_cache()
        if level == 1:
            runner.offload_weights()
        else:
            runner.discard_weights()
        runner.sleep_draft(level)
        self._asleep = frozenset(SLEEP_TAGS)
        logger.info("sleeping (level %d): KV cache freed, weights %s", level,
                    "in host memory" if level == 1 else "freed")

    @serialized
    def wake_up(self, tags: list[str] | None = None) -> None:
        """Take device memory again: ``tags`` None wakes everything, or a subset of ``["weights", "kv_cache"]``
        (e.g. weights first, to update them, then the cache). Weights freed at level 2 are read from the
        checkpoint again; the KV cache comes back empty."""
        self._check_sleep_mode()
        tags = list(SLEEP_TAGS) if tags is None else tags
        if isinstance(tags, str) or not all(t in SLEEP_TAGS for t in tags):
            raise ValueError(f"wake_up tags must be a list drawn from {list(SLEEP_TAGS)}, got {tags!r}")
        runner = self._paged_engine("wake_up").runner
        if "weights" in tags and not runner.weights_on_device:
            if runner.has_host_weights:
                runner.restore_weights()
            else:
                runner.reload_weights()
        if "kv_cache" in tags:
            runner.restore_kv_cache()
        self._asleep = self._asleep - set(tags)
        if not self._asleep:
            runner.wake_draft()

    def _check_sleep_mode(self) -> None:
        if not self.engine_args.enable_sleep_mode:
            raise ValueError("Sleep mode is not enabled: build the LLM with enable_sleep_mode=True to use "
                             "sleep() and wake_up()")

    def is_sleeping(self) -> bool:
        return bool(self._asleep)

    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError(f"the LLM is asleep ({', '.join(sorted(self._asleep))} released by sleep()); "
                               "call wake_up() first")

    # ---- weights (JAX-native use: docs/jax_native.md) ------------------------------------------------

    def get_weights(self):
        """The served parameters as an ``nnx.State`` (the device arrays themselves, in the served layout)."""
        self._check_awake()
        return self._paged_engine("get_weights").runner.served_weights()

    @serialized
    def update_weights(self, weights: Any) -> None:
        """Serve ``weights`` from now on: an ``nnx.State`` like ``get_weights()``, ``nnx.to_pure_dict`` of it, or a
        model module of the same architecture. Arrays on other shardings are moved on the device, other
        floating dtypes cast; names and shapes must match. Nothing is recompiled; the prefix cache is reset
        (its KV came from the old weights). Also brings weights back after ``sleep(level=2)``."""
        engine = self._paged_engine("update_weights")
        if engine.has_unfinished_requests():
            raise ValueError(f"cannot update weights with {engine.get_num_unfinished_requests()} unfinished "
                             "requests; finish or abort them first")
        for runner in self._runners("update_weights"):
            runner.update_weights(weights)
        self._asleep = self._asleep - {"weights"}
        engine.reset_prefix_cache()

    # ---- direct access -----------------------------------------------------------------------------

    @serialized
    def apply_model(self, func: Callable[[Any], Any]) -> list:
        """``[func(model)]`` with the Flax NNX model (one element: one controller). Parameter values that
        ``func`` changes in place are kept (same shapes and dtypes); call ``reset_prefix_cache()`` after
        changing weights, as with vLLM."""
        if not callable(func):
            raise TypeError(f"apply_model needs a callable, got {type(func).__name__}")
        results = []
        for runner in self._runners("apply_model"):
            model = runner.model()
            results.append(func(model))
            runner.update_from_model(model)
        return results

    @serialized
    def collective_rpc(self, method: str | Callable[..., Any], timeout: float | None = None, args: tuple = (),
                       kwargs: dict[str, Any] | None = None) -> list:
        """Call ``method`` on the model runner: a method name (``runner.method(*args, **kwargs)``) or a callable
        (``method(runner, *args, **kwargs)``). Returns a list with the one result."""
        if timeout is not None:
            raise ValueError("collective_rpc(timeout=...) is not supported: the call runs in this process, "
                             "which cannot interrupt it; pass timeout=None")
        runners = self._runners("collective_rpc")
        kwargs = dict(kwargs or {})
        if isinstance(method, str):
            fn = getattr(runners[0], method, None)
            if fn is None:
                raise AttributeError(f"collective_rpc: the model runner has no method {method!r}")
            if not callable(fn):
                raise TypeError(f"collective_rpc: the model runner's {method!r} is not a method")
            results = [getattr(runner, method)(*args, **kwargs) for runner in runners]
            if method in _WEIGHT_METHODS and self.llm_engine is not None:
                self.llm_engine.reset_prefix_cache()  # the cached KV came from the old weights
            return results
        if callable(method):
            return [method(runner, *args, **kwargs) for runner in runners]
        raise TypeError(f"collective_rpc needs a method name or a callable, got {type(method).__name__}")

    # ---- profiling and topology ---------------------------------------------------------------------

    @serialized
    def start_profile(self, profile_dir: str | None = None) -> None:
        """Start a ``jax.profiler`` trace (open it with TensorBoard or XProf) into ``profile_dir`` (a new
        temporary directory when None; ``profile_dir`` attribute afterwards)."""
        import jax

        if self._profile_dir is not None:
            raise RuntimeError(f"a profile is already being recorded into {self._profile_dir}")
        where = profile_dir if profile_dir is not None else tempfile.mkdtemp(prefix="jaxllm-profile-")
        jax.profiler.start_trace(where)
        self._profile_dir = self.profile_dir = where
        logger.info("profiling into %s", where)

    @serialized
    def stop_profile(self) -> None:
        """Stop the trace started by ``start_profile`` and write it."""
        import jax

        if self._profile_dir is None:
            raise RuntimeError("stop_profile() without start_profile()")
        jax.profiler.stop_trace()
        logger.info("profile written to %s", self._profile_dir)
        self._profile_dir = None

    def get_world_size(self, include_dp: bool = True) -> int:
        """Devices serving the model: tensor_parallel_size, times data_parallel_size with ``include_dp``."""
        if not isinstance(include_dp, bool):
            raise TypeError(f"include_dp must be a bool, got {include_dp!r}")
        if self.llm_engine is None:  # the bidirectional encoder: one replica over its tensor-parallel mesh
            return int(self.engine_args.tensor_parallel_size)
        runners = self._runners("get_world_size")
        return int(runners[0].mesh.devices.size) * (len(runners) if include_dp else 1)
