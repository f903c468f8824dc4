"""Models that are already in memory: an NNX module built by ``jaxllm.load_model`` or our model classes, or a
config plus a parameter pytree (``model_from_params``), served by ``LLM(model=module, tokenizer=...)`` without
writing a checkpoint. The parameter tree is checked as strictly as the loader checks a checkpoint: every
parameter of the architecture present, nothing else, each with its shape; arrays are moved onto the serving
shardings on the device (a trainer's layout is resharded, not copied through the host)."""

from __future__ import annotations

import os
from typing import Any

from jaxllm.config import ModelConfig


def is_in_memory_model(model: Any) -> bool:
    """Whether ``model`` is an NNX module (rather than a path or a hub id)."""
    if isinstance(model, (str, os.PathLike)):
        return False
    from flax import nnx

    return isinstance(model, nnx.Module)


def module_config(module: Any) -> ModelConfig:
    """The ModelConfig a jaxllm model module was built with (its ``config`` attribute)."""
    cfg = getattr(module, "config", None)
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"model={type(module).__name__}: an in-memory model must be a jaxllm model module (built by "
                        "jaxllm.load_model, jaxllm.model_from_params or a jaxllm.models class), which carries its "
                        "ModelConfig as .config")
    return cfg


def as_model_config(config: Any, dtype: Any = "auto") -> ModelConfig:
    """A ModelConfig from a ModelConfig, a HF config dict or a ``transformers.PretrainedConfig``."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, dict) or hasattr(config, "to_dict"):
        from jaxllm.config import check_hf_config

        hf = config if isinstance(config, dict) else config.to_dict()
        check_hf_config(hf, "config")
        return ModelConfig.from_hf(hf, dtype=dtype)
    raise TypeError(f"config must be a jaxllm ModelConfig, a HF config dict or a transformers PretrainedConfig, "
                    f"got {type(config).__name__}")


def model_from_params(config: Any, params: Any, *, dtype: Any = "auto", tensor_parallel_size: int = 1, mesh=None):
    """The jaxllm model of ``config`` with ``params`` (an ``nnx.State``, ``nnx.to_pure_dict`` of it or the state of
    another module of the same architecture), placed on a mesh of ``tensor_parallel_size`` devices. Every
    parameter must be there with its shape; floating dtypes are cast to the config's dtype. ``mesh``: the mesh
    to place on (default: one of ``tensor_parallel_size`` devices)."""
    import jax
    from flax import nnx

    from jaxllm.parallel.sharding import make_mesh
    from jaxllm.weights.loader import assemble_model, param_shardings

    cfg = as_model_config(config, dtype)
    mesh = mesh if mesh is not None else make_mesh(tensor_parallel_size)
    if isinstance(params, nnx.Module):
        params = nnx.state(params)
    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    if not isinstance(pure, dict):
        raise TypeError(f"params must be an nnx.State or a nested dict of arrays, got {type(params).__name__}")
    flat = _flatten(pure)
    targets = param_shardings(cfg, mesh)
    names = {_key(p): p for p in targets}
    unknown = sorted(set(flat) - set(names))
    missing = sorted(set(names) - set(flat))
    if unknown or missing:
        raise ValueError(f"params do not match {cfg.architecture}: missing {missing[:8]}, unknown {unknown[:8]}")
    arrays = {}
    for name, path in names.items():
        target, value = targets[path], flat[name]
        if tuple(jax.numpy.shape(value)) != tuple(target.shape):
            raise ValueError(f"params[{name!r}] has shape {tuple(jax.numpy.shape(value))}, {cfg.architecture} "
                             f"needs {tuple(target.shape)}")
        placed = jax.device_put(value, target.sharding)
        arrays[path] = placed if placed.dtype == target.dtype else placed.astype(target.dtype)
    return assemble_model(cfg, arrays, mesh)


def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, name))
        else:
            out[name] = v
    return out
