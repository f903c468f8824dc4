"""After loading: fp8 W8A8 weights (``ModelConfig.fp8_activations``) are stored K-minor for cuBLASLt.

cuBLASLt's fp8 GEMM takes both operands with the contracted dim minor. Our weights are ``[*in_dims, *out_dims]``
(e.g. gate_up [D, 2, F]); given that layout XLA transposes the fp8 weight inside every step, and the fp8 GEMM
runs at 0.37x of bf16 on the H200 instead of ~2x (docs/quantization.md). So once a model is loaded,
each such ``qweight`` is transposed once to ``[*out_dims, *in_dims]``, with its logical axes permuted the same way
(tensor parallelism shards the same named axes), and ``k_minor`` tells ``jaxllm.models.quant.linear`` to
contract the trailing dims. Loading itself (checkpoints, load-time quantization, dummy weights) is unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.models.quant import QuantizedWeight
from jaxllm.parallel.sharding import named_sharding


@functools.cache
def _transposer(perm: tuple, sharding):
    return jax.jit(lambda w: jnp.transpose(w, perm), out_shardings=sharding, donate_argnums=0)


def store_fp8_weights_k_minor(model, mesh, rules) -> int:
    """Transpose every W8A8 ``QuantizedWeight`` of ``model`` in place; returns how many were changed."""
    changed = 0
    for _, module in nnx.iter_graph(model):
        if not isinstance(module, QuantizedWeight) or module.activations != "dynamic" or module.k_minor:
            continue
        qweight = module.qweight[...]
        in_ndim = qweight.ndim - module.scale[...].ndim
        perm = tuple(range(in_ndim, qweight.ndim)) + tuple(range(in_ndim))
        axes = tuple(module.qweight.get_metadata()["logical_axes"])
        axes = axes[in_ndim:] + axes[:in_ndim]
        module.qweight = nnx.Param(_transposer(perm, named_sharding(mesh, axes, rules))(qweight),
                                   logical_axes=axes)
        module.k_minor = True
        changed += 1
    return changed
