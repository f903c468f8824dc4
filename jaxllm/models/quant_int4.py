"""4-bit weights of AWQ / GPTQ checkpoints as one module, ``Int4Weight``, and its matmul.

A linear weight of logical shape ``[*in_dims, *out_dims]`` (q_proj [D, H, Dh], o_proj [H, Dh, D], gate_up
[D, 2, F], down [F, D]) with K = prod(in_dims) input channels is held in the packed layout of
``jaxllm.ops.quant_matmul`` (the input dims flattened, the output dims kept, so TP shards them as usual):

* ``qweight`` [K // 8, *out_dims] int32, 8 input channels per int32 (nibble j of row r = channel 8r + j);
* ``scales`` [K // G, *out_dims] float16 and ``zeros`` [K // G, *out_dims] int8 (0..15), one per group of G
  consecutive input channels: ``w = (q - zero) * scale``;
* ``perm`` [K] int32, GPTQ act order only: the checkpoint's channels are sorted by group at load time so that
  groups become contiguous, and the activation is gathered the same way (``x[..., perm]``) before the matmul.

On Hopper the loader then converts ``qweight`` to the "nk" layout of ``jaxllm.ops.quant_matmul``
(``layout == "nk"``: ``qweight`` [*out_dims, K] int4 holding q - 8, logical axes permuted the same way;
jaxllm/weights/int4_layout.py), the operand of the Mosaic GPU kernel; ``scales`` / ``zeros`` are unchanged.

Logical axes: the packed input axis takes the first input dim's name (o_proj: "q_heads", down: "mlp"), so a
row-parallel weight is split along K (each shard holds whole groups: ``check_int4_sharding``); the output
dims keep theirs. With one group per channel (G = K) the group axis is replicated.

Matmul (``int4_linear``): one 2-D ``jaxllm.ops.quant_matmul.int4_matmul`` per TP shard in ``shard_map`` (a
Pallas call cannot be partitioned by XLA), with a psum for row-parallel weights, whichever implementation the
dispatcher picks (docs/quantization.md). The reference, run as one 2-D product, is XLA's dequantize + GEMM: at
256 rows XLA writes a bf16 copy of each weight every step, which is why the GPU kernels exist. XLA's own int4
type is not used as the layout: its GEMM fusions are slower still (0.59x bf16 on gate_up at 256 rows).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxllm.ops import quant_matmul
from jaxllm.parallel.sharding import MODEL_AXIS, logical_to_spec

PACK = quant_matmul.PACK
DUMMY_SCALE = 0.02 / 4.6  # dummy weights: (q - 8) * scale has std ~0.02 for q uniform in 0..15


class Int4Weight(nnx.Module):
    """Packed int4 linear weight (see the module docstring). ``group_size`` -1 means one group of K channels.

    Placeholder values (zeros, scales 1, zero points 8, identity perm); the loader replaces them. ``mesh`` and
    ``spec`` (the qweight's PartitionSpec) are static attributes the loader sets, so the matmul knows how the
    weight is sharded."""

    def __init__(self, shape, axes, in_ndim: int, group_size: int, act_order: bool,
                 scale_dtype=jnp.float16, *, impl: str | None = None, variant: str | None = None):
        in_dims, out_dims = tuple(shape[:in_ndim]), tuple(shape[in_ndim:])
        k = math.prod(in_dims)
        group = k if group_size == -1 else group_size
        if k % PACK or k % group or group % PACK:
            raise ValueError(f"int4 weight {tuple(shape)}: input features {k} must be a multiple of 8 and of the "
                             f"group size {group}")
        in_axis, out_axes = axes[0], tuple(axes[in_ndim:])
        group_axis = in_axis if k // group > 1 else None
        self.qweight = nnx.Param(jnp.zeros((k // PACK, *out_dims), jnp.int32), logical_axes=(in_axis, *out_axes))
        self.scales = nnx.Param(jnp.ones((k // group, *out_dims), scale_dtype), logical_axes=(group_axis, *out_axes))
        self.zeros = nnx.Param(jnp.full((k // group, *out_dims), 8, jnp.int8), logical_axes=(group_axis, *out_axes))
        self.perm = nnx.Param(jnp.arange(k, dtype=jnp.int32), logical_axes=(None,)) if act_order else None
        self.in_dims, self.group_size = in_dims, group
        self.mesh, self.spec = None, None
        # the LLM's quant_matmul_impl / int4_kernel_variant (None: the dispatcher's choice per call shape)
        self.impl, self.variant = impl, variant
        self.layout = "packed"  # "nk" once jaxllm.weights.int4_layout has converted qweight

    def bind_sharding(self, mesh, rules) -> None:
        """Record the mesh and the packed qweight's PartitionSpec, (K spec, *out specs) in either layout
        (static; used by ``int4_linear``). Called before any layout conversion."""
        self.mesh = mesh if mesh is not None and mesh.size > 1 else None
        self.spec = tuple(logical_to_spec(self.qweight.get_metadata()["logical_axes"], rules))

    def qweight_spec(self) -> tuple:
        """The stored qweight's PartitionSpec entries in its current layout."""
        return self.spec if self.layout == "packed" else (*self.spec[1:], self.spec[0])


def check_int4_sharding(weight_shape_in: int, group_size: int, tp: int, name: str) -> None:
    """A row-parallel int4 weight is split along K: every shard must hold whole groups (and whole int32s)."""
    group = weight_shape_in if group_size == -1 else group_size
    if tp > 1 and weight_shape_in // group > 1 and (weight_shape_in % tp or (weight_shape_in // tp) % group):
        raise ValueError(f"tensor_parallel_size={tp} splits {name}'s {weight_shape_in} input features into "
                         f"{weight_shape_in / tp:g} per device, not a multiple of the group size {group}: "
                         f"quantization groups would straddle devices")
    if tp > 1 and (weight_shape_in // tp) % PACK:
        raise ValueError(f"tensor_parallel_size={tp} splits {name}'s {weight_shape_in} input features into "
                         f"{weight_shape_in / tp:g} per device, not a multiple of 8 (one int32 of int4 values)")


def dequantize_int4_weight(weight: Int4Weight, dtype) -> jax.Array:
    """-> w [*in_dims, *out_dims] in ``dtype`` (input channels in the sorted order when ``perm`` is set)."""
    if weight.layout == "nk":
        w = jnp.moveaxis(quant_matmul.dequantize_int4_nk(weight.qweight[...], weight.scales[...],
                                                         weight.zeros[...], dtype), -1, 0)
    else:
        w = quant_matmul.dequantize_int4(weight.qweight[...], weight.scales[...], weight.zeros[...], dtype)
    return w.reshape(*weight.in_dims, *w.shape[1:])


def _flat_input(x: jax.Array, weight: Int4Weight) -> jax.Array:
    """x [..., *in_dims] -> [..., K], gathered by ``perm`` for act-order weights."""
    n_in = len(weight.in_dims)
    x = x.reshape(*x.shape[:x.ndim - n_in], -1)
    return x if weight.perm is None else jnp.take(x, weight.perm[...], axis=-1)


def int4_linear(x: jax.Array, weight: Int4Weight) -> jax.Array:
    """x [..., *in_dims] @ w -> [..., *out_dims] in x.dtype (float32 accumulation)."""
    return int4_linear_group(x, [weight])[0]


def groupable(weights) -> bool:
    """Whether ``int4_linear_group`` can run ``weights`` as one grouped product: nk layout, one input (same input
    dims, K sharding and group size, no act-order gather) and one mesh."""
    first = weights[0]
    return all(isinstance(w, Int4Weight) and w.layout == "nk" and w.perm is None and w.in_dims == first.in_dims
               and w.group_size == first.group_size and w.mesh is first.mesh and w.spec[0] == first.spec[0]
               for w in weights)


def int4_linear_group(x: jax.Array, weights) -> list:
    """[x @ w for w in weights], each [..., *out_dims_w] in x.dtype. More than one weight only when
    ``groupable``: then the nk products share one kernel launch per device (q / k / v projections)."""
    first = weights[0]
    if len(weights) > 1 and not groupable(weights):
        raise ValueError("int4_linear_group needs nk-layout weights with one input (see groupable)")
    n_in = len(first.in_dims)
    lead = x.shape[:x.ndim - n_in]
    xf = _flat_input(x, first)
    arrays = [(w.qweight[...], w.scales[...], w.zeros[...]) for w in weights]

    def local(xf, arrays):
        # One 2-D [M, K] x [K, N] product per device (per weight, or one grouped call), whichever implementation:
        # the op the microbenchmark measures (scripts/bench_quant_matmul.py). Tied to x: XLA would otherwise
        # hoist every layer's dequantization to the start of the program and hold all the bf16 weights at once
        # (B2 with AWQ ran out of memory: 8.5 GiB of temporaries).
        xf, arrays = jax.lax.optimization_barrier((xf, arrays))
        flat = [(q, s.reshape(s.shape[0], -1), z.reshape(z.shape[0], -1)) for q, s, z in arrays]
        if first.layout == "nk":  # [*out_dims, K] int4
            outs = quant_matmul.int4_matmul_nk_group(xf, [(q.reshape(-1, q.shape[-1]), s, z) for q, s, z in flat],
                                                     impl=first.impl)
        else:
            outs = [quant_matmul.int4_matmul(xf, q.reshape(q.shape[0], -1), s, z, impl=first.impl,
                                             variant=first.variant) for q, s, z in flat]
        outs = [o.reshape(*xf.shape[:-1], *a[1].shape[1:]) for o, a in zip(outs, arrays)]  # scales: [G, *out]
        if first.mesh is not None and first.spec[0] is not None:  # row parallel: partial sums over K
            outs = [jax.lax.psum(o, MODEL_AXIS) for o in outs]
        return outs

    if first.mesh is None:
        return local(xf, arrays)
    lead_none = (None,) * len(lead)
    in_specs, out_specs = [], []
    for w in weights:
        spec = w.spec
        group_spec = spec if w.scales.get_metadata()["logical_axes"][0] else (None, *spec[1:])
        in_specs.append((P(*w.qweight_spec()), P(*group_spec), P(*group_spec)))
        out_specs.append(P(*lead_none, *spec[1:]))
    return jax.shard_map(local, mesh=first.mesh, in_specs=(P(*lead_none, first.spec[0]), in_specs),
                         out_specs=out_specs, check_vma=False)(xf, arrays)
