"""The steps every way of building a model's weights shares, used by the checkpoint loader (loader.py) and the
random-weights loader (dummy.py).

``planned_model`` builds the model abstractly (shapes, dtypes and logical axes, no memory) and refuses one
whose weights cannot fit the devices; ``place_param`` places one parameter as a sharded array, each device
reading only its own shard, and quantizes it on device when the config asks for int8 / fp8; ``merge_model``
puts the arrays into the NNX model and applies the device-specific relayouts (int4 / fp8 weight layouts, MoE
mesh binding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxllm.config import ModelConfig
from jaxllm.models.moe import bind_moe_mesh
from jaxllm.models.quant import SHAPES_ONLY, quantize
from jaxllm.models.quant_int4 import Int4Weight, check_int4_sharding
from jaxllm.models.registry import model_class
from jaxllm.ops import quant_matmul
from jaxllm.parallel.sharding import named_sharding, sharding_rules
from jaxllm.quantization_config import INT4_METHODS
from jaxllm.runner.memory import check_config_fits, check_weights_fit
from jaxllm.weights.fp8_layout import store_fp8_weights_k_minor
from jaxllm.weights.inflight import InFlightCopies
from jaxllm.weights.int4_layout import store_int4_weights_nk


def abstract_model(cfg: ModelConfig, dtype=None):
    """(graphdef, {path: abstract Variable}) of the model, without allocating anything."""
    cls = model_class(cfg)

    def build():  # zero placeholders: shapes are all that is kept
        return cls(cfg, dtype=dtype, rngs=SHAPES_ONLY)

    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    return graphdef, dict(nnx.to_flat_state(state))


def planned_model(cfg: ModelConfig, mesh: Mesh):
    """``abstract_model`` of a model whose weights fit ``mesh``'s devices: refused from the config first (at
    once), then from the exact parameter shapes."""
    devices = mesh.devices.flatten()
    check_config_fits(cfg, devices)
    graphdef, variables = abstract_model(cfg)
    check_weights_fit(variables, devices)
    return graphdef, variables


def check_int4_tp(cfg: ModelConfig, tp: int) -> None:
    """Before anything is placed: row-parallel int4 weights (o_proj, down), split along K, keep whole groups
    on each device."""
    if cfg.quantization in INT4_METHODS and tp > 1:
        check_int4_sharding(cfg.num_heads * cfg.head_dim, cfg.quant_group_size, tp, "o_proj")
        check_int4_sharding(cfg.intermediate_size, cfg.quant_group_size, tp, "down_proj")


def _bind_int4_sharding(model, mesh: Mesh, rules) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Int4Weight):
            node.bind_sharding(mesh, rules)


def place(shape, dtype, sharding, read_slice) -> jax.Array:
    """Build a sharded array; ``read_slice(index) -> np.ndarray`` supplies one device's shard. A shard may be a
    strided view (a transposed [out, in] checkpoint weight): the host->device copy reads it through its strides,
    so a weight is copied once, not first into a contiguous host array and then to the device."""
    np_dtype = jnp.dtype(dtype)

    def callback(index):
        return np.asarray(read_slice(index), dtype=np_dtype)

    return jax.make_array_from_callback(tuple(shape), sharding, callback)


@functools.cache
def jitted_quantizer(method: str, in_ndim: int, qweight_sharding, scale_sharding,
                     random_shape: tuple | None = None, per_expert: bool = False):
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


def quantized_parts(variables: dict, path: tuple, mesh: Mesh, rules) -> tuple | None:
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


def place_param(cfg: ModelConfig, path: tuple, variables: dict, mesh: Mesh, rules, read_slice,
                 inflight: InFlightCopies) -> dict:
    """{path: array} for a plain parameter; {qweight path: ..., scale path: ...} for a quantized one. Each is
    registered in ``inflight``; a quantized weight's qweight counts as its float32 input's host bytes (it is ready
    only after that copy, and holding it, not the input, keeps one full-precision weight on device at a time)."""
    quantized = quantized_parts(variables, path, mesh, rules)
    if quantized is None:
        var = variables[path]
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
        return {path: inflight.add(place(var.get_value().shape, var.get_value().dtype, sharding, read_slice))}
    qpath, spath, q_sharding, s_sharding, in_ndim, per_expert = quantized
    full = place(variables[qpath].get_value().shape, jnp.float32, q_sharding, read_slice)
    quantizer = jitted_quantizer(cfg.quantization, in_ndim, q_sharding, s_sharding, per_expert=per_expert)
    qweight, scale = quantizer(full)
    inflight.add(qweight, nbytes=full.nbytes)
    return {qpath: qweight, spath: scale}


def merge_model(cfg: ModelConfig, graphdef, variables: dict, arrays: dict, mesh: Mesh):
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
