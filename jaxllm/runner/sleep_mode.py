"""Sleep mode of the model runner (vLLM's ``LLM.sleep`` / ``wake_up``): give device memory back and take it again.

The runner's device state is its parameter leaves (``params``, flattened NNX state) and its KV cache
(``kv_caches``, one array per layer). Each can be released on its own:

- ``release_kv_cache`` deletes the cache arrays (its contents are lost) and ``restore_kv_cache`` allocates a
  zeroed cache of the same shape and sharding;
- ``offload_weights`` copies every parameter to host memory (numpy) and deletes the device arrays;
  ``restore_weights`` puts them back with their original shardings;
- ``discard_weights`` deletes the device arrays without a copy; ``load_model_weights`` takes a freshly built
  model (the checkpoint read again) in their place.

Deleting a ``jax.Array`` frees its device buffer at once, so the memory is returned whatever other Python
references to the array object remain. The compiled step programs stay valid: they depend on shapes only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx


class SleepMode:
    """Mixed into ModelRunner (which owns ``params``, ``_treedef``, ``kv_caches``, ``num_blocks``,
    ``_set_cache_shapes`` and ``_allocate_cache``)."""

    _host_params: list | None = None
    param_avals: list | None = None  # shapes, dtypes and shardings of the parameters once freed
    _param_shardings: list | None = None
    # Builds the model again from its checkpoint (set by LLM): what reload_weights() reads.
    weights_source: Callable[[], Any] | None = None
    load_args: Any = None  # the EngineArgs weights_source reads with (set by LLM; update_config changes it)
    # held while the cache or the weights are deleted (ModelRunner's lock: a background thread may be running a
    # program on them, ``StartupPrograms._run_program_once``)
    device_lock: Any = contextlib.nullcontext()

    @property
    def weights_on_device(self) -> bool:
        return self.params is not None

    @property
    def kv_cache_on_device(self) -> bool:
        return bool(self.kv_caches) and isinstance(self.kv_caches[0], jax.Array)

    def check_awake(self) -> None:
        if not (self.weights_on_device and self.kv_cache_on_device):
            raise RuntimeError("the model is asleep (LLM.sleep): call LLM.wake_up() before generating")

    def release_kv_cache(self) -> None:
        """Delete the KV cache arrays; the programs keep its shapes."""
        with self.device_lock:
            if not self.kv_cache_on_device:
                return
            for cache in self.kv_caches:
                cache.delete()
            self._set_cache_shapes(self.num_blocks)

    def restore_kv_cache(self) -> None:
        """A zeroed KV cache of the planned shape (prefix-cache contents are gone: the engine forgets them)."""
        if not self.kv_cache_on_device:
            self._allocate_cache()

    def offload_weights(self) -> None:
        """Copy the parameters to host memory, then free their device buffers."""
        if self.params is None:
            return
        self._param_shardings = [getattr(p, "sharding", None) for p in self.params]
        # one device_get over the list starts every transfer before waiting on any
        self._host_params = [np.asarray(h) for h in jax.device_get(list(self.params))]
        self.discard_weights(keep_host_copy=True)

    def discard_weights(self, keep_host_copy: bool = False) -> None:
        """Free the parameters' device buffers (and the host copy, unless ``keep_host_copy``)."""
        with self.device_lock:
            if self.params is not None:  # what update_weights places new arrays on while they are gone
                self.param_avals = [jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=p.sharding) for p in self.params]
            for p in self.params or ():
                if isinstance(p, jax.Array):
                    p.delete()
            self.params = None
        if not keep_host_copy:
            self._host_params = self._param_shardings = None

    @property
    def has_host_weights(self) -> bool:
        return self._host_params is not None

    def restore_weights(self) -> None:
        """Put the host copy made by ``offload_weights`` back on the devices."""
        if self.params is not None:
            return
        if self._host_params is None:
            raise RuntimeError("the weights were discarded (sleep level 2): load them again from the checkpoint")
        self.params = [jax.device_put(h, s) if s is not None else h
                       for h, s in zip(self._host_params, self._param_shardings)]
        self._host_params = self._param_shardings = None

    def load_model_weights(self, model) -> None:
        """Take the parameters of ``model`` (an NNX module of the same architecture, already placed)."""
        leaves = self._leaves_of(model, "load_model_weights: the model's parameter tree differs from the runner's")
        self.discard_weights()
        self.params = leaves

    def reload_weights(self) -> None:
        """Read the weights from the checkpoint again (``weights_source``), freeing the current ones first."""
        if self.weights_source is None:
            raise RuntimeError("reload_weights: this runner has no weights_source to read the weights from")
        self.discard_weights()
        self.load_model_weights(self.weights_source())

    def update_config(self, overrides: dict) -> None:
        """vLLM's worker ``update_config``: ``{"load_config": {"load_format": ...}}`` sets the format that
        ``reload_weights`` reads (load_format="dummy" at start-up, then the real weights). Other keys: ValueError."""
        load = overrides.get("load_config") if isinstance(overrides, dict) else None
        if set(overrides or {}) != {"load_config"} or not isinstance(load, dict) or set(load) != {"load_format"}:
            raise ValueError(f"update_config supports only {{'load_config': {{'load_format': ...}}}}, got {overrides!r}")
        if self.load_args is None:
            raise RuntimeError("update_config: this runner's weights were not loaded from a checkpoint")
        from jaxllm.engine_args import LOAD_FORMATS

        if load["load_format"] not in LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {load['load_format']!r}")
        self.load_args.load_format = load["load_format"]  # the EngineArgs that weights_source builds from

    def sleep_draft(self, level: int) -> None:
        """The draft model of draft-model speculation (``draft``, a runner with this mixin) sleeps as the
        target: its cache freed, its weights copied to the host (level 1) or freed (level 2)."""
        draft = getattr(self, "draft", None)
        if draft is None:
            return
        draft.release_kv_cache()
        draft.offload_weights() if level == 1 else draft.discard_weights()

    def wake_draft(self) -> None:
        """The draft's weights (from the host copy, or its checkpoint read again) and an empty cache, back on
        the devices: once the target is awake, whatever woke it (``wake_up``, ``update_weights``)."""
        draft = getattr(self, "draft", None)
        if draft is None:
            return
        if not draft.weights_on_device:
            draft.restore_weights() if draft.has_host_weights else draft.reload_weights()
        draft.restore_kv_cache()

    def _leaves_of(self, model, mismatch: str) -> list:
        """``model``'s flattened NNX state, which must have the runner's tree structure (else ``mismatch``)."""
        _, state = nnx.split(model)
        leaves, treedef = jax.tree_util.tree_flatten(state)
        if treedef != self._treedef:
            raise ValueError(mismatch)
        return leaves

    def model(self):
        """The NNX model over the runner's current parameters (for ``LLM.apply_model``)."""
        if self.params is None:
            raise RuntimeError("the weights are not on the device (LLM.sleep): call LLM.wake_up() first")
        return nnx.merge(self.graphdef, jax.tree_util.tree_unflatten(self._treedef, self.params))

    def update_from_model(self, model) -> None:
        """Adopt ``model``'s parameters after user code changed them in place (same shapes and dtypes, so the
        compiled programs stay valid)."""
        leaves = self._leaves_of(model, "apply_model: the function changed the model's structure; only "
                                        "parameter values may change")
        for i, (new, old) in enumerate(zip(leaves, self.params)):
            if getattr(new, "shape", None) != getattr(old, "shape", None) or \
                    getattr(new, "dtype", None) != getattr(old, "dtype", None):
                raise ValueError(f"apply_model: parameter {i} changed from {old.shape} {old.dtype} to "
                                 f"{getattr(new, 'shape', None)} {getattr(new, 'dtype', None)}; only values may change")
        self.params = [jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else new
                       for new, old in zip(leaves, self.params)]
