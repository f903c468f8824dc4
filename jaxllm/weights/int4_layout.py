"""After loading: on Hopper, AWQ / GPTQ weights are stored in the "nk" layout the Mosaic GPU int4 kernel reads.

The kernel (ops/quant_matmul/mosaic_gpu.py) computes y^T = W^T x^T with the weight as the wgmma's register
operand, which needs W^T's rows K-contiguous: ``qweight`` [K // 8, *out_dims] int32 becomes [*out_dims, K] int4
holding q - 8 (``jaxllm.ops.quant_matmul.to_nk_layout``), once, with its logical axes permuted the same way so
tensor parallelism shards the same named axes. ``jaxllm.ops.quant_matmul.weight_layout`` decides (Hopper with a bfloat16
model, or ``quant_matmul_impl="mosaic_gpu"``); loading itself (checkpoints, dummy weights) is unchanged.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from jaxllm.models.quant_int4 import Int4Weight
from jaxllm.ops.quant_matmul import to_nk_layout
from jaxllm.parallel.sharding import named_sharding


@functools.cache
def _converter(sharding):
    return jax.jit(to_nk_layout, out_shardings=sharding)


def store_int4_weights_nk(model, mesh, rules) -> int:
    """Convert every packed ``Int4Weight`` of ``model`` in place (after ``bind_sharding``); returns how many."""
    changed = 0
    for _, module in nnx.iter_graph(model):
        if not isinstance(module, Int4Weight) or module.layout == "nk":
            continue
        axes = tuple(module.qweight.get_metadata()["logical_axes"])
        axes = (*axes[1:], axes[0])
        module.qweight = nnx.Param(_converter(named_sharding(mesh, axes, rules))(module.qweight[...]),
                                   logical_axes=axes)
        module.layout = "nk"
        changed += 1
    return changed
