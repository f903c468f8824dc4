"""After loading: AWQ/GPTQ weights rewritten into XLA's own int4 type (``JAXLLM_INT4_LAYOUT=s4``, opt-in).

Why: in the packed layout (int32 words of 8 nibbles) XLA fuses the dequantization into its GEMM only for small
batches; at 256 decode rows it writes a bf16 copy of every weight each step, and AWQ ran at 0.62x bf16
(benchmarks/kernels_profile_h200.md). Held as ``int4`` (ops/quant_matmul/xla_s4.py), the weight is a type XLA's
GEMM fusion reads natively. Whether that is faster is not measured yet, hence opt-in: ``packed`` stays the default.

Each ``Int4Weight`` is converted once on device, shard by shard (``to_s4``; out_shardings keep the logical axes),
and marked ``layout = "s4"`` for ``jaxllm.models.quant_int4.int4_linear``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import env_choice
from jaxllm.models.quant_int4 import Int4Weight
from jaxllm.ops.quant_matmul.xla_s4 import to_s4
from jaxllm.parallel.sharding import named_sharding

INT4_LAYOUT_ENV = "JAXLLM_INT4_LAYOUT"
INT4_LAYOUTS = ("packed", "s4")


def int4_layout() -> str:
    """"packed" (default) or "s4", from $JAXLLM_INT4_LAYOUT."""
    return env_choice(INT4_LAYOUT_ENV, INT4_LAYOUTS)


@functools.cache
def _converter(dtype, shardings: tuple):
    return jax.jit(lambda q, s, z: to_s4(q, s, z, dtype), out_shardings=shardings)


def _last_dim_shards(sharding, shape: tuple) -> int:
    """How many pieces ``sharding`` cuts the last dimension of an array of ``shape`` into."""
    return shape[-1] // sharding.shard_shape(shape)[-1]


def store_int4_weights_s4(model, mesh, rules, dtype) -> int:
    """Rewrite every packed ``Int4Weight`` of ``model`` in place (scales in ``dtype``); returns how many."""
    changed = 0
    for _, module in nnx.iter_graph(model):
        if not isinstance(module, Int4Weight) or module.layout != "packed":
            continue
        axes = [tuple(p.get_metadata()["logical_axes"]) for p in (module.qweight, module.scales, module.zeros)]
        shardings = tuple(named_sharding(mesh, a, rules) for a in axes)
        qweight = module.qweight[...]
        last, shards = qweight.shape[-1], _last_dim_shards(shardings[0], qweight.shape)
        if (last // 2) % shards:
            raise ValueError(f"the s4 int4 layout packs pairs along the last output dim ({last}); split over "
                             f"{shards} devices that is not whole bytes per device: use JAXLLM_INT4_LAYOUT=packed")
        w_s4, scales, zero_term = _converter(jnp.dtype(dtype), shardings)(
            qweight, module.scales[...], module.zeros[...])
        module.qweight = nnx.Param(w_s4, logical_axes=axes[0])
        module.scales = nnx.Param(scales, logical_axes=axes[1])
        module.zeros = nnx.Param(zero_term, logical_axes=axes[2])  # now (8 - zero) * scale, float32
        module.layout = "s4"
        changed += 1
    return changed
