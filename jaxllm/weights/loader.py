"""Strict, streaming weight loading into sharded NNX state.

The model is first built abstractly (``nnx.eval_shape``: shapes, dtypes and logical axes, no memory). Each
checkpoint tensor is then checked against the per-architecture key map (unknown, duplicate or missing keys
and shape mismatches are errors naming the key and the file), converted to the target dtype and placed
with ``jax.make_array_from_callback``: every device receives only its own shard, sliced lazily from the
memory-mapped file, so neither host nor any device ever holds the whole model.

With ``cfg.quantization`` ("int8"/"fp8") the decoder layers' linear weights are ``QuantizedWeight`` modules
(``qweight`` + ``scale``, see ``jaxllm.models.quant``): each is placed in float32 with the qweight's sharding and
quantized on device right away, so only one full-precision weight exists at a time. Pre-quantized checkpoints
(AWQ/GPTQ 4-bit ``Int4Weight`` modules, fp8 ``QuantizedWeight``) are rewritten into those layouts by
``quantized_checkpoint.quantized_tensors`` and placed as they are.

The host->device copies of ``make_array_from_callback`` are asynchronous and keep their host shard buffers alive
until they finish; ``inflight.InFlightCopies`` caps the bytes still in flight (``LLM(load_inflight_bytes=...)``, default 2 GiB).

The steps shared with ``load_format="dummy"`` (planning, placing one parameter, merging) are in placement.py;
the random weights in dummy.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import jax
import numpy as np
from jax.sharding import Mesh

from jaxllm.config import ModelConfig
from jaxllm.parallel.sharding import make_mesh, named_sharding, sharding_rules
from jaxllm.weights.dummy import build_dummy_model
from jaxllm.weights.gguf import GGUFCheckpoint, is_gguf
from jaxllm.weights.inflight import DEFAULT_INFLIGHT_BYTES, InFlightCopies
from jaxllm.weights.kv_scales import KV_SCALE_PARAM, KVScaleCollector
from jaxllm.weights.mappings import IGNORED_SUFFIXES, Target, checkpoint_key, key_map, optional_keys
from jaxllm.weights.placement import abstract_model, check_int4_tp, merge_model, place_param, planned_model
from jaxllm.weights.quantized_checkpoint import quantized_tensors

# build_dummy_model (dummy.py), abstract_model (placement.py) and KV_SCALE_PARAM keep their import path here.
__all__ = ["KV_SCALE_PARAM", "WeightLoadError", "abstract_model", "assemble_model", "build_dummy_model",
           "build_model_from_tensors", "canonical_arrays", "load_weights", "param_shardings"]


class WeightLoadError(ValueError):
    """A checkpoint does not match the architecture (names the key and the file)."""


def _fused_slot(num_parts: tuple[int, ...], axes: tuple[int, ...], part: tuple[int, ...], ndim: int) -> tuple:
    """Index of one part's block in a fused parameter of ``ndim`` dims: ``part[j]`` on fused axis ``axes[j]``
    (e.g. stacked experts [E, D, 2, F]: num_parts (E, 2), axes (0, 2)), everything along the others."""
    index: list = [slice(None)] * ndim
    for axis, n, p in zip(axes, num_parts, part):
        if not 0 <= p < n:
            raise ValueError(f"fused part {part} outside {num_parts}")
        index[axis] = p
    return tuple(index)


def _fused_shape(block_shape: tuple[int, ...], num_parts: tuple[int, ...], axes: tuple[int, ...]) -> tuple:
    """Shape of the fused parameter whose parts have ``block_shape``: each ``num_parts[j]`` inserted at
    ``axes[j]`` (in increasing axis order)."""
    shape = list(block_shape)
    for axis, n in sorted(zip(axes, num_parts)):
        shape.insert(axis, n)
    return tuple(shape)


def _place_target(cfg: ModelConfig, target: Target, array: np.ndarray, variables: dict, mesh: Mesh, rules,
                  pending: dict, placed: dict, inflight: InFlightCopies) -> None:
    """Place one target's parameter; a part of a fused parameter waits in ``pending`` for its other parts."""
    ours = target.to_ours(array)
    if target.part is None:
        placed.update(place_param(cfg, target.path, variables, mesh, rules, lambda idx, a=ours: a[idx], inflight))
        return
    num_parts, axes, part = target.fused()
    if target.path not in pending:  # the fused parameter's host buffer; each part is copied into its block
        pending[target.path] = (np.empty(_fused_shape(ours.shape, num_parts, axes), ours.dtype), set())
    fused, filled = pending[target.path]
    # a copy (not a view kept until the last part): a view would fault the file's pages back in when the fused
    # weight is placed, and they would stay resident until the whole file is closed (safetensors_reader)
    fused[_fused_slot(num_parts, axes, part, fused.ndim)] = ours
    filled.add(part)
    if len(filled) == int(np.prod(num_parts)):
        placed.update(place_param(cfg, target.path, variables, mesh, rules, lambda idx, a=fused: a[idx], inflight))
        del pending[target.path]


def _assemble(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]], variables: dict, mesh: Mesh,
              inflight: InFlightCopies) -> dict:
    """Check every tensor against the key map and place it. Returns {path: jax.Array}."""
    targets = key_map(cfg)
    optional = optional_keys(cfg)
    rules = sharding_rules(cfg, mesh.devices.size)
    check_int4_tp(cfg, mesh.devices.size)
    tensors = quantized_tensors(cfg, tensors)
    kv_scales = KVScaleCollector(cfg.num_layers, WeightLoadError)
    seen: dict[str, str] = {}
    pending: dict[tuple, list] = {}
    placed: dict[tuple, jax.Array] = {}
    for file_key, array, source in tensors:
        name = checkpoint_key(cfg, file_key)  # a multimodal checkpoint's language-model keys -> ours
        if name is None or name.endswith(IGNORED_SUFFIXES):
            continue
        if name in seen:
            raise WeightLoadError(f"duplicate key {name!r} in {source} (already read from {seen[name]})")
        seen[name] = source
        if kv_scales.take(name, array, source):
            continue
        found: Target | tuple[Target, ...] | None = targets.get(name)
        if found is None:
            if name in optional:
                continue
            raise WeightLoadError(f"unexpected key {name!r} in {source}: {cfg.architecture} has no such weight")
        for target in found if isinstance(found, tuple) else (found,):
            if tuple(array.shape) != target.hf_shape:
                raise WeightLoadError(f"shape mismatch for {name!r} in {source}: expected {target.hf_shape}, "
                                      f"got {tuple(array.shape)}")
            _place_target(cfg, target, array, variables, mesh, rules, pending, placed, inflight)
    missing = sorted(set(targets) - set(seen))
    if missing:
        shown = ", ".join(repr(k) for k in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise WeightLoadError(f"checkpoint is missing {len(missing)} key(s) for {cfg.architecture}: {shown}")
    placed.update(kv_scales.arrays(mesh))  # optional: 1.0 for the layers the checkpoint has no scales for
    return placed


def build_model_from_tensors(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]],
                             mesh: Mesh | None = None, inflight_bytes: int = DEFAULT_INFLIGHT_BYTES):
    """Model with weights from an iterable of (HF name, array in HF layout, source file). ``inflight_bytes``:
    the bound on host->device copies still running (``InFlightCopies``)."""
    mesh = mesh or make_mesh(1)
    graphdef, variables = planned_model(cfg, mesh)
    arrays = _assemble(cfg, tensors, variables, mesh, InFlightCopies(inflight_bytes))
    return merge_model(cfg, graphdef, variables, arrays, mesh)


def canonical_arrays(path: str | os.PathLike, cfg: ModelConfig, mesh: Mesh,
                     inflight_bytes: int = DEFAULT_INFLIGHT_BYTES) -> dict:
    """{NNX path: sharded jax.Array} of a checkpoint in the model's canonical layout: checked, converted and
    quantized as ``load_weights`` does, before the device-specific relayouts of ``assemble_model`` (so what is
    saved from it loads on any device)."""
    _, variables = planned_model(cfg, mesh)
    _, tensors = _tensor_source(os.fspath(path))
    return _assemble(cfg, tensors, variables, mesh, InFlightCopies(inflight_bytes))


def assemble_model(cfg: ModelConfig, arrays: dict, mesh: Mesh):
    """The model of ``cfg`` from canonical arrays ({NNX path: array} with every path of the model)."""
    graphdef, variables = abstract_model(cfg)
    missing = sorted("/".join(map(str, p)) for p in set(variables) - set(arrays))
    unknown = sorted("/".join(map(str, p)) for p in set(arrays) - set(variables))
    if missing or unknown:
        raise WeightLoadError(f"parameters do not match {cfg.architecture}: missing {missing[:8]}, "
                              f"unknown {unknown[:8]}")
    for p, var in variables.items():
        want, got = var.get_value(), arrays[p]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise WeightLoadError(f"parameter {'/'.join(map(str, p))}: expected {want.dtype}{list(want.shape)}, "
                                  f"got {got.dtype}{list(got.shape)}")
    return merge_model(cfg, graphdef, variables, arrays, mesh)


def param_shardings(cfg: ModelConfig, mesh: Mesh) -> dict:
    """{NNX path: (jax.ShapeDtypeStruct with its NamedSharding)} of the canonical parameters on ``mesh``."""
    _, variables = abstract_model(cfg)
    rules = sharding_rules(cfg, mesh.devices.size)
    out = {}
    for p, var in variables.items():
        value = var.get_value()
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
        out[p] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
    return out


def _tensor_source(path: str, gguf_cache_dir: str | None = None, cfg: ModelConfig | None = None):
    """(hf config dict or None, tensor iterator) for a safetensors folder or a GGUF file (its dequantized tensors
    read through the cache in ``gguf_cache_dir``, gguf_cache.py, when given). ``cfg``: a GGUF file is first
    checked to hold every weight of that model (``check_gguf_keys``)."""
    if is_gguf(path):
        from jaxllm.weights.gguf_cache import cached_tensors

        ckpt = GGUFCheckpoint(path)
        if cfg is not None:
            check_gguf_keys(ckpt, cfg)
        return ckpt.hf_config, ((name, arr, path) for name, arr in cached_tensors(ckpt, gguf_cache_dir))
    from jaxllm.weights.safetensors_reader import iter_checkpoint

    return None, iter_checkpoint(path)


def check_gguf_keys(ckpt: GGUFCheckpoint, cfg: ModelConfig) -> None:
    """Strict loading of a GGUF before any tensor is dequantized: a weight the model needs and the file lacks is
    an error naming both the HF key and the llama.cpp tensor (unknown tensors already fail in GGUFCheckpoint)."""
    from jaxllm.weights.gguf_names import gguf_tensor_name

    missing = sorted(set(key_map(cfg)) - set(ckpt.tensor_names()))
    if missing:
        shown = ", ".join(f"{k!r} (GGUF {gguf_tensor_name(k, ckpt.architecture)!r})" for k in missing[:8])
        raise WeightLoadError(f"GGUF file {ckpt.path!r} is missing {len(missing)} tensor(s) for "
                              f"{cfg.architecture}: {shown}{' ...' if len(missing) > 8 else ''}")


def load_weights(path: str | os.PathLike, cfg: ModelConfig, mesh: Mesh | None = None,
                 inflight_bytes: int = DEFAULT_INFLIGHT_BYTES, gguf_cache_dir: str | None = None):
    """Load a checkpoint folder (safetensors, possibly sharded, or an Orbax checkpoint written by ``jaxllm
    convert``) or a GGUF file into the model of ``cfg``. ``inflight_bytes``: the bound on host->device copies
    still running while safetensors / GGUF tensors are placed; ``gguf_cache_dir``: the dequantized-GGUF cache
    (``LLM(gguf_cache_dir=...)``; None: none)."""
    from jaxllm.weights.orbax_checkpoint import is_orbax_checkpoint, load_converted

    if is_orbax_checkpoint(path):
        return load_converted(os.fspath(path), cfg, mesh or make_mesh(1))
    if not is_gguf(os.fspath(path)):
        from jaxllm.weights.safetensors_reader import check_layer_count

        check_layer_count(path, cfg.num_layers)
    _, tensors = _tensor_source(os.fspath(path), gguf_cache_dir, cfg)
    return build_model_from_tensors(cfg, tensors, mesh, inflight_bytes)
