"""Swapping the served weights in place (``LLM.get_weights`` / ``LLM.update_weights``): the RL loop of a JAX user
samples with ``LLM``, takes an optimizer step on the parameters and serves the new ones, in one process.

The compiled step programs take the parameters as arguments (a flat list of arrays, never constants), so new
arrays with the same shapes, dtypes and shardings run through the same executables: no recompilation, no host
round trip. An array on another sharding (a trainer's mesh) is moved with ``jax.device_put`` onto the served
sharding, device to device; another floating dtype is cast on the device; another shape or a missing / unknown
parameter is a ValueError naming it. ``get_weights`` returns the served tree itself (an ``nnx.State``), whose
layout is the one being served: with load-time quantization or the fp8 / int4 relayouts of some GPUs it is not
the checkpoint's layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class WeightUpdates:
    """Mixed into ModelRunner (which owns ``graphdef``, ``params`` (flat leaves), ``_treedef`` and, from
    ``SleepMode``, ``param_avals`` / ``_host_params``)."""

    def served_weights(self) -> nnx.State:
        """The served parameters as an ``nnx.State`` (the arrays themselves, not copies)."""
        if self.params is None:
            raise RuntimeError("the weights are not on the device (LLM.sleep): call LLM.wake_up() first")
        return jax.tree_util.tree_unflatten(self._treedef, self.params)

    def update_weights(self, weights: Any) -> int:
        """Serve ``weights`` from the next step on (also after ``sleep(level=2)`` freed the old ones): an ``nnx.State`` shaped like ``served_weights()``, an NNX
        module of the same architecture, or the nested dict of ``nnx.to_pure_dict(state)``. Returns the number of
        arrays that had to be moved or cast (0 when every array already matched)."""
        reference = self.params if self.params is not None else self.param_avals  # freed by sleep(level=2)
        if reference is None:
            raise RuntimeError("update_weights: the runner holds no parameters")
        served = jax.tree_util.tree_unflatten(self._treedef, reference)
        if isinstance(weights, nnx.Module):
            weights = nnx.state(weights)
        if isinstance(weights, dict) and not isinstance(weights, nnx.State):
            pure = weights
            weights = jax.tree_util.tree_map(lambda x: x, served)  # same tree, leaves to be replaced
            try:
                nnx.replace_by_pure_dict(weights, pure)
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f"update_weights: the dict does not match the served parameters ({e})") from None
            _check_same_keys(pure, nnx.to_pure_dict(served))
        named_new = jax.tree_util.tree_flatten_with_path(weights)[0]
        named_old = jax.tree_util.tree_flatten_with_path(served)[0]
        new_names = [param_name(p) for p, _ in named_new]
        old_names = [param_name(p) for p, _ in named_old]
        if new_names != old_names:
            missing = sorted(set(old_names) - set(new_names))
            unknown = sorted(set(new_names) - set(old_names))
            raise ValueError(f"update_weights: parameter names differ from the served model's: missing "
                             f"{missing[:8]}, unknown {unknown[:8]}")
        leaves, moved = [], 0
        for name, (_, new), old in zip(old_names, named_new, reference):
            if tuple(jnp.shape(new)) != tuple(old.shape):
                raise ValueError(f"update_weights: {name} has shape {tuple(jnp.shape(new))}, the served one "
                                 f"{tuple(old.shape)}")
            if not isinstance(new, jax.Array) or new.dtype != old.dtype or new.sharding != old.sharding:
                new = _place(new, old.dtype, old.sharding)
                moved += 1
            leaves.append(new)
        self.params = leaves
        self._host_params = None  # a host copy made by sleep(level=1) holds the old weights
        return moved


def param_name(path) -> str:
    """'layers/0/attn/q/kernel' for a tree path (the Variable's own ``.value`` attribute left out)."""
    parts = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path]
    return "/".join(str(p) for p in parts if p != "value")


def _place(x, dtype, sharding):
    """``x`` on ``sharding`` in ``dtype`` (device to device for a jax.Array; a cast happens after the move)."""
    x = jax.device_put(x, sharding)
    return x if x.dtype == dtype else jax.jit(lambda a: a.astype(dtype), out_shardings=sharding)(x)


def _check_same_keys(new: dict, served: dict, prefix: str = "") -> None:
    """replace_by_pure_dict ignores extra keys: they are a mistake here (a typo would silently not update)."""
    for key, value in new.items():
        where = f"{prefix}/{key}" if prefix else str(key)
        if key not in served:
            raise ValueError(f"update_weights: unknown parameter {where!r}")
        if isinstance(value, dict):
            _check_same_keys(value, served[key], where)
    for key in served:
        if key not in new:
            raise ValueError(f"update_weights: parameter {(prefix + '/' if prefix else '') + str(key)!r} is missing")
