"""``load_format="dummy"``: random weights of the real shapes, generated on device and sharded (vLLM's dummy
load), for benchmarks and tests that need a model's cost but not its outputs. No checkpoint is read; the
parameters are made by small jitted programs, one per distinct (shape, dtype, sharding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxllm.config import ModelConfig
from jaxllm.models.quant_int4 import DUMMY_SCALE
from jaxllm.parallel.sharding import make_mesh, named_sharding, sharding_rules
from jaxllm.weights.kv_scales import KV_SCALE_PARAM
from jaxllm.weights.placement import (
    check_int4_tp,
    jitted_quantizer,
    merge_model,
    planned_model,
    quantized_parts,
)


def build_dummy_model(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0):
    """Random weights of the real shapes (like vLLM's load_format="dummy"), generated on device, sharded.
    Norm weights are ones; everything else is N(0, 0.02), quantized when ``cfg.quantization`` says so.
    One program per distinct (shape, dtype, sharding)."""
    mesh = mesh or make_mesh(1)
    graphdef, variables = planned_model(cfg, mesh)
    makers: dict = {}
    rules = sharding_rules(cfg, mesh.devices.size)
    check_int4_tp(cfg, mesh.devices.size)
    arrays = {}
    key = jax.random.key(seed)
    for i, (path, var) in enumerate(variables.items()):
        if (*path[:-1], "scales") in variables:  # an Int4Weight's qweight / scales / zeros / perm
            sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
            arrays[path] = _int4_dummy(path[-1], var.get_value().shape, sharding)(jax.random.fold_in(key, i))
            continue
        if path[-1] == "scale" and (*path[:-1], "qweight") in variables:
            continue  # made with its qweight
        quantized = quantized_parts(variables, path[:-1], mesh, rules) if path[-1] == "qweight" else None
        if quantized is not None:
            qpath, spath, q_sharding, s_sharding, in_ndim, per_expert = quantized
            quantizer = jitted_quantizer(cfg.quantization, in_ndim, q_sharding, s_sharding,
                                         var.get_value().shape, per_expert)
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
    return merge_model(cfg, graphdef, variables, arrays, mesh)


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
