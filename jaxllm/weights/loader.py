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
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxllm.config import ModelConfig
from jaxllm.models.moe import bind_moe_mesh
from jaxllm.models.quant import SHAPES_ONLY, quantize
from jaxllm.models.quant_int4 import DUMMY_SCALE, Int4Weight, check_int4_sharding
from jaxllm.models.registry import model_class
from jaxllm.ops import quant_matmul
from jaxllm.parallel.sharding import make_mesh, named_sharding, sharding_rules
from jaxllm.quantization_config import INT4_METHODS
from jaxllm.runner.memory import check_config_fits, check_weights_fit
from jaxllm.weights.fp8_layout import store_fp8_weights_k_minor
from jaxllm.weights.gguf import GGUFCheckpoint, is_gguf
from jaxllm.weights.inflight import DEFAULT_INFLIGHT_BYTES, InFlightCopies
from jaxllm.weights.int4_layout import store_int4_weights_nk
from jaxllm.weights.kv_scales import KV_SCALE_PARAM, KVScaleCollector
from jaxllm.weights.mappings import IGNORED_SUFFIXES, Target, checkpoint_key, key_map, optional_keys
from jaxllm.weights.quantized_checkpoint import quantized_tensors


class WeightLoadError(ValueError):
    """A checkpoint does not match the architecture (names the key and the file)."""


def abstract_model(cfg: ModelConfig, dtype=None):
    """(graphdef, {path: abstract Variable}) of the model, without allocating anything."""
    cls = model_class(cfg)

    def build():  # zero placeholders: shapes are all that is kept
        return cls(cfg, dtype=dtype, rngs=SHAPES_ONLY)

    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    return graphdef, dict(nnx.to_flat_state(state))


def _planned_model(cfg: ModelConfig, mesh: Mesh):
    """``abstract_model`` of a model whose weights fit ``mesh``'s devices: refused from the config first (at
    once), then from the exact parameter shapes."""
    devices = mesh.devices.flatten()
    check_config_fits(cfg, devices)
    graphdef, variables = abstract_model(cfg)
    check_weights_fit(variables, devices)
    return graphdef, variables


def _check_int4_tp(cfg: ModelConfig, tp: int) -> None:
    """Before anything is placed: row-parallel int4 weights (o_proj, down), split along K, keep whole groups
    on each device."""
    if cfg.quantization in INT4_METHODS and tp > 1:
        check_int4_sharding(cfg.num_heads * cfg.head_dim, cfg.quant_group_size, tp, "o_proj")
        check_int4_sharding(cfg.intermediate_size, cfg.quant_group_size, tp, "down_proj")


def _bind_int4_sharding(model, mesh: Mesh, rules) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Int4Weight):
            node.bind_sharding(mesh, rules)


def _place(shape, dtype, sharding, read_slice) -> jax.Array:
    """Build a sharded array; ``read_slice(index) -> np.ndarray`` supplies one device's shard. A shard may be a
    strided view (a transposed [out, in] checkpoint weight): the host->device copy reads it through its strides,
    so a weight is copied once, not first into a contiguous host array and then to the device."""
    np_dtype = jnp.dtype(dtype)

    def callback(index):
        return np.asarray(read_slice(index), dtype=np_dtype)

    return jax.make_array_from_callback(tuple(shape), sharding, callback)


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


@functools.cache
def _quantizer(method: str, in_ndim: int, qweight_sharding, scale_sharding, random_shape: tuple | None = None,
               per_expert: bool = False):
    """Jitted ``w -> (qweight, scale)`` with the target shardings (one program per weight shape). With
    ``random_shape`` it takes a PRNG key instead and quantizes an N(0, 0.02) weight of that shape (dummy load).
    ``per_expert``: w is [E, *in_dims, *out_dims] (MoE experts), quantized expert by expert."""
    def fn(x):
        if random_shape is not None:
            x = 0.02 * jax.random.normal(x, random_shape, jnp.float32)
        if per_expert:
            return jax.vmap(lambda w: quantize(w, method, in_ndim))(x)
        return quantize(x, method, in_ndim)

    return jax.jit(fn, out_shardings=(qweight_sharding, scale_sharding))


def _quantized_parts(variables: dict, path: tuple, mesh: Mesh, rules) -> tuple | None:
    """For a quantized linear weight at ``path``: (qweight path, scale path, qweight sharding, scale sharding,
    in_ndim, per_expert); None for a plain parameter. ``per_expert``: stacked MoE experts, whose qweight and scale
    both lead with the "expert" axis (jaxllm.models.moe.QuantizedExperts)."""
    qpath, spath = (*path, "qweight"), (*path, "scale")
    if path in variables or qpath not in variables:
        return None
    qvar, svar = variables[qpath], variables[spath]
    in_ndim = qvar.get_value().ndim - svar.get_value().ndim
    scale_axes = svar.get_metadata()["logical_axes"]
    return (qpath, spath, named_sharding(mesh, qvar.get_metadata()["logical_axes"], rules),
            named_sharding(mesh, scale_axes, rules), in_ndim, scale_axes[:1] == ("expert",))


def _place_param(cfg: ModelConfig, path: tuple, variables: dict, mesh: Mesh, rules, read_slice,
                 inflight: InFlightCopies) -> dict:
    """{path: array} for a plain parameter; {qweight path: ..., scale path: ...} for a quantized one. Each is
    registered in ``inflight``; a quantized weight's qweight counts as its float32 input's host bytes (it is ready
    only after that copy, and holding it, not the input, keeps one full-precision weight on device at a time)."""
    quantized = _quantized_parts(variables, path, mesh, rules)
    if quantized is None:
        var = variables[path]
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
        return {path: inflight.add(_place(var.get_value().shape, var.get_value().dtype, sharding, read_slice))}
    qpath, spath, q_sharding, s_sharding, in_ndim, per_expert = quantized
    full = _place(variables[qpath].get_value().shape, jnp.float32, q_sharding, read_slice)
    qweight, scale = _quantizer(cfg.quantization, in_ndim, q_sharding, s_sharding, per_expert=per_expert)(full)
    inflight.add(qweight, nbytes=full.nbytes)
    return {qpath: qweight, spath: scale}


def _place_target(cfg: ModelConfig, target: Target, array: np.ndarray, variables: dict, mesh: Mesh, rules,
                  pending: dict, placed: dict, inflight: InFlightCopies) -> None:
    """Place one target's parameter; a part of a fused parameter waits in ``pending`` for its other parts."""
    ours = target.to_ours(array)
    if target.part is None:
        placed.update(_place_param(cfg, target.path, variables, mesh, rules, lambda idx, a=ours: a[idx], inflight))
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
        placed.update(_place_param(cfg, target.path, variables, mesh, rules, lambda idx, a=fused: a[idx], inflight))
        del pending[target.path]


def _assemble(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]], variables: dict, mesh: Mesh,
              inflight: InFlightCopies) -> dict:
    """Check every tensor against the key map and place it. Returns {path: jax.Array}."""
    targets = key_map(cfg)
    optional = optional_keys(cfg)
    rules = sharding_rules(cfg, mesh.devices.size)
    _check_int4_tp(cfg, mesh.devices.size)
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


def _merge(cfg: ModelConfig, graphdef, variables: dict, arrays: dict, mesh: Mesh):
    for path, var in variables.items():
        var.set_value(arrays[path])
    model = nnx.merge(graphdef, nnx.from_flat_state(list(variables.items())))
    rules = sharding_rules(cfg, mesh.devices.size)
    bind_moe_mesh(model, mesh, rules)
    if cfg.quantization in INT4_METHODS:
        _bind_int4_sharding(model, mesh, rules)
        if quant_matmul.weight_layout(cfg.dtype, cfg.quant_matmul_impl) == "nk":
            store_int4_weights_nk(model, mesh, rules)
    if cfg.quantization == "fp8":
        store_fp8_weights_k_minor(model, mesh, rules)
    return model


def build_model_from_tensors(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]],
                             mesh: Mesh | None = None, inflight_bytes: int = DEFAULT_INFLIGHT_BYTES):
    """Model with weights from an iterable of (HF name, array in HF layout, source file). ``inflight_bytes``:
    the bound on host->device copies still running (``InFlightCopies``)."""
    mesh = mesh or make_mesh(1)
    graphdef, variables = _planned_model(cfg, mesh)
    arrays = _assemble(cfg, tensors, variables, mesh, InFlightCopies(inflight_bytes))
    return _merge(cfg, graphdef, variables, arrays, mesh)


def canonical_arrays(path: str | os.PathLike, cfg: ModelConfig, mesh: Mesh,
                     inflight_bytes: int = DEFAULT_INFLIGHT_BYTES) -> dict:
    """{NNX path: sharded jax.Array} of a checkpoint in the model's canonical layout: checked, converted and
    quantized as ``load_weights`` does, before the device-specific relayouts of ``assemble_model`` (so what is
    saved from it loads on any device)."""
    _, variables = _planned_model(cfg, mesh)
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
    return _merge(cfg, graphdef, variables, arrays, mesh)


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


def build_dummy_model(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0):
    """Random weights of the real shapes (like vLLM's load_format="dummy"), generated on device, sharded.
    Norm weights are ones; everything else is N(0, 0.02), quantized when ``cfg.quantization`` says so.
    One program per distinct (shape, dtype, sharding)."""
    mesh = mesh or make_mesh(1)
    graphdef, variables = _planned_model(cfg, mesh)
    makers: dict = {}
    rules = sharding_rules(cfg, mesh.devices.size)
    _check_int4_tp(cfg, mesh.devices.size)
    arrays = {}
    key = jax.random.key(seed)
    for i, (path, var) in enumerate(variables.items()):
        if (*path[:-1], "scales") in variables:  # an Int4Weight's qweight / scales / zeros / perm
            sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
            arrays[path] = _int4_dummy(path[-1], var.get_value().shape, sharding)(jax.random.fold_in(key, i))
            continue
        if path[-1] == "scale" and (*path[:-1], "qweight") in variables:
            continue  # made with its qweight
        quantized = _quantized_parts(variables, path[:-1], mesh, rules) if path[-1] == "qweight" else None
        if quantized is not None:
            qpath, spath, q_sharding, s_sharding, in_ndim, per_expert = quantized
            quantizer = _quantizer(cfg.quantization, in_ndim, q_sharding, s_sharding, var.get_value().shape,
                                   per_expert)
            arrays[qpath], arrays[spath] = quantizer(jax.random.fold_in(key, i))
            continue
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
        shape, dtype = var.get_value().shape, var.get_value().dtype
        is_norm = path[-1] in ("weight", KV_SCALE_PARAM)  # ones: norm weights, KV-cache scales
        make = makers.get((shape, dtype, sharding, is_norm))
        if make is None:
            if is_norm:
                fn = lambda k, s=shape, d=dtype: jnp.ones(s, d)
            else:
                fn = lambda k, s=shape, d=dtype: (0.02 * jax.random.normal(k, s, jnp.float32)).astype(d)
            make = makers[(shape, dtype, sharding, is_norm)] = jax.jit(fn, out_shardings=sharding)
        arrays[path] = make(jax.random.fold_in(key, i))
    return _merge(cfg, graphdef, variables, arrays, mesh)


@functools.cache
def _int4_dummy(part: str, shape: tuple, sharding):
    """Jitted key -> one dummy Int4Weight array: random packed nibbles, zero points 8, scales such that the
    weights have std ~0.02, identity perm."""
    def fn(key):
        if part == "qweight":
            return jax.lax.bitcast_convert_type(jax.random.bits(key, shape, jnp.uint32), jnp.int32)
        if part == "scales":
            return jnp.full(shape, DUMMY_SCALE, jnp.float16)
        if part == "zeros":
            return jnp.full(shape, 8, jnp.int8)
        return jnp.arange(shape[0], dtype=jnp.int32)

    return jax.jit(fn, out_shardings=sharding)


def _tensor_source(path: str, gguf_cache_dir: str | None = None):
    """(hf config dict or None, tensor iterator) for a safetensors folder or a GGUF file (its dequantized tensors
    read through the cache in ``gguf_cache_dir``, gguf_cache.py, when given)."""
    if is_gguf(path):
        from jaxllm.weights.gguf_cache import cached_tensors

        ckpt = GGUFCheckpoint(path)
        return ckpt.hf_config, ((name, arr, path) for name, arr in cached_tensors(ckpt, gguf_cache_dir))
    from jaxllm.weights.safetensors_reader import iter_checkpoint

    return None, iter_checkpoint(path)


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
    _, tensors = _tensor_source(os.fspath(path), gguf_cache_dir)
    return build_model_from_tensors(cfg, tensors, mesh, inflight_bytes)
