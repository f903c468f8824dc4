"""Sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE, ...): router, top-k, tokens sorted by expert, grouped GEMMs.
The routers beyond softmax-top-k (PhiMoE's sparsemixer, DBRX's p-norm, Ernie 4.5's correction bias) are in
``jaxllm.models.moe_routing``; every family's experts run through the same grouped matmuls.

Shape letters: T tokens, D model dim, E experts (E_l on this device), F expert ffn dim (F_l on this device),
k experts per token. The T*k (token, choice) rows are sorted by expert and placed in a ``GroupedLayout`` slot
order (each expert's rows contiguous, starting on a kernel tile); two grouped matmuls
(``jaxllm.ops.grouped_matmul``: gate_up with SwiGLU applied before its store, then down) run every expert over
its own rows only, never all experts over every token; each token's k rows are then gathered back and summed with
their router weights. Shapes are static (S slots for T*k rows, whatever the routing); the layout is built once
per layer, by compare-and-sums (no cumsum, no loop), and shared by both matmuls.

``quantization="fp8"`` / ``"int8"`` (at load time) and fp8 checkpoints (per-tensor or per-channel
``weight_scale``) store the experts as ``QuantizedExperts``: 1-byte weights with a float32 scale per expert and
output channel. The grouped matmul takes the weights converted to x's dtype
and each row's output is scaled by its expert's scales (weight-only: the experts never run fp8 x fp8 GEMMs, while
the attention projections may; jaxllm.models.quant). The GPU kernel converts each weight tile in registers, so
the experts are read from HBM at 1 byte per weight. AWQ / GPTQ MoE checkpoints are a ValueError naming the
method.

Under tensor parallelism (a mesh of N > 1 devices) the experts run per device in ``shard_map`` and their partial
outputs are summed over the ``model`` axis (one psum per layer, like a row-parallel dense MLP):
- default (Megatron style): every device holds all experts with F/N of each expert's ffn dim;
- ``enable_expert_parallel``: every device holds E/N whole experts. The tokens are already replicated between
  layers (the all-gather dispatch), so each device computes the rows routed to its own experts and the psum
  combines them; rows of other devices' experts sort last and contribute zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxllm.config import ModelConfig
from jaxllm.models.layers import param
from jaxllm.models.moe_routing import route_variant, routing_of
from jaxllm.models.quant import placeholder_normal, quantize
from jaxllm.ops.grouped_matmul import grouped_layout, grouped_matmul_slotted, layout_plan
from jaxllm.parallel.sharding import MODEL_AXIS, logical_to_spec
from jaxllm.quantization_config import LOAD_TIME_METHODS

GATE_UP_AXES = ("expert", "embed", None, "moe_mlp")  # [E, D, 2, F]: gate (0) and up (1)
DOWN_AXES = ("expert", "moe_mlp", "embed")  # [E, F, D]


def route(x: jax.Array, router: jax.Array, top_k: int, norm_topk_prob: bool) -> tuple[jax.Array, jax.Array]:
    """x [T, D], router [D, E] -> (float32 weights [T, k], int32 experts [T, k]). As HF: logits in x's dtype,
    softmax in float32 over all experts, the top k (ties to the lower expert id), optionally renormalized."""
    logits = jnp.einsum("td,de->te", x, router)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    weights, experts = jax.lax.top_k(probs, top_k)
    if norm_topk_prob:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights, experts.astype(jnp.int32)


def _order(sort_key: jax.Array, e_local: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """sort_key [M] local expert of each row (e_local: another device's) -> (order [M]: the row at each sorted
    position, position [M]: the sorted position of each row, group_sizes [E_l]). One sort, one [M] int32
    scatter (the inverse permutation) and one [M, E_l] compare-and-sum."""
    m = sort_key.shape[0]
    iota = jnp.arange(m, dtype=jnp.int32)
    order = jnp.argsort(sort_key, stable=True).astype(jnp.int32)
    position = jnp.zeros_like(order).at[order].set(iota, unique_indices=True, mode="promise_in_bounds")
    group_sizes = jnp.sum(sort_key[:, None] == jnp.arange(e_local, dtype=jnp.int32), axis=0, dtype=jnp.int32)
    return order, position, group_sizes


def expert_ffn(x: jax.Array, weights: jax.Array, experts: jax.Array, gate_up: tuple, down: tuple,
               first_expert, impl: str | None = None, biases: tuple = (None, None),
               clamp: tuple[float, float] | None = None) -> jax.Array:
    """The experts [first_expert, first_expert + E_l) of x's routed rows, summed per token with their weights.

    x [T, D]; weights [T, k] float32; experts [T, k] int32 (global ids); gate_up (w [E_l, D, 2, F_l], scale None
    or [E_l, 2, F_l]); down (w [E_l, F_l, D], scale None or [E_l, D]). Returns float32 [T, D]: the full MoE
    output when every expert is local, else this device's share (rows of other experts contribute zero).

    The routed rows live in one ``GroupedLayout`` slot order (S slots, each expert's rows starting on a kernel
    tile) from the gather out of x to the gather back: built once, shared by both grouped matmuls.
    ``biases`` / ``clamp``: gpt-oss's expert biases and clamped SwiGLU (``swiglu_experts``)."""
    t, k = experts.shape
    e_local, d, _, f_local = gate_up[0].shape
    local_id = experts.reshape(-1) - first_expert  # [T*k]
    is_local = (local_id >= 0) & (local_id < e_local)
    sort_key = jnp.where(is_local, local_id, e_local)  # rows of other devices' experts sort last
    order, position, group_sizes = _order(sort_key, e_local)
    impl, block_m = layout_plan(t * k, e_local, [(d, f_local), (f_local, d)], impl)
    layout = grouped_layout(group_sizes, t * k, block_m)
    token = jnp.take(order, layout.source_rows(), mode="clip") // k  # [S] token of each slot
    rows = jnp.take(x, token, axis=0, mode="clip")  # [S, D]
    y = swiglu_experts(rows, layout, impl, gate_up, down, biases, clamp)  # [S, D]
    slot = layout.slots(position, sort_key).reshape(t, k)  # slot of each (token, choice) row
    return _combine(y, slot, is_local.reshape(t, k), weights)


def swiglu_experts(rows: jax.Array, layout, impl: str, gate_up: tuple, down: tuple, biases: tuple = (None, None),
                   clamp: tuple[float, float] | None = None) -> jax.Array:
    """rows [S, D] in ``layout``'s slot order -> [S, D]: each slot's expert's silu(gate) * up, then down.
    gate_up / down: (weight, scale or None) as ``expert_ffn``'s. gpt-oss: ``biases`` (gate_up [E_l, 2, F_l],
    down [E_l, D]) and ``clamp`` (alpha, limit: its clamped SwiGLU), applied in the grouped matmuls' epilogues
    (float32, rounded once)."""
    (gate_up, gate_up_scale), (down, down_scale) = gate_up, down
    gate_up_bias, down_bias = biases
    e_local, d, _, f_local = gate_up.shape
    with jax.named_scope("experts_gate_up"):
        gu_scale = None if gate_up_scale is None else gate_up_scale.reshape(e_local, 2 * f_local)
        gu_bias = None if gate_up_bias is None else gate_up_bias.reshape(e_local, 2 * f_local)
        h = grouped_matmul_slotted(rows, gate_up.reshape(e_local, d, 2 * f_local), layout, impl=impl,
                                   scale=gu_scale, bias=gu_bias, swiglu=True, clamp=clamp)  # [S, F_l]
    with jax.named_scope("experts_down"):
        return grouped_matmul_slotted(h, down, layout, impl=impl, scale=down_scale, bias=down_bias)  # [S, D]


def _combine(y: jax.Array, slot: jax.Array, is_local: jax.Array, weights: jax.Array) -> jax.Array:
    """y [S, D] slotted expert outputs, slot / is_local / weights [T, k] -> float32 [T, D]: each token's rows
    weighted and summed. k gathers, selects and adds that XLA fuses into one pass writing [T, D] (no [T, k, D]
    array, no [T]-batched 1 x k x D dots). Other devices' rows (expert parallelism) read slot 0, whatever it
    holds: selected away, never multiplied."""
    t, k = slot.shape
    out = jnp.zeros((t, y.shape[1]), jnp.float32)
    for j in range(k):
        y_j = jnp.take(y, slot[:, j], axis=0, mode="clip").astype(jnp.float32)
        out = out + jnp.where(is_local[:, j, None], y_j * weights[:, j, None], 0.0)
    return out


class QuantizedExperts(nnx.Module):
    """Stacked expert weights [E, K, *out] as ``qweight`` (int8 / float8_e4m3fn) and a float32 ``scale``
    [E, *out], one per expert and output channel (the loader quantizes expert by expert). Placeholder values."""

    def __init__(self, shape, method: str, axes, rngs: nnx.Rngs):
        qweight, scale = jax.vmap(lambda w: quantize(w, method, 1))(placeholder_normal(rngs, shape))
        self.qweight = nnx.Param(qweight, logical_axes=tuple(axes))
        self.scale = nnx.Param(scale, logical_axes=(axes[0], *axes[2:]))


def _expert_weight(shape, dtype, axes, cfg: ModelConfig, rngs: nnx.Rngs):
    """A plain [E, K, *out] parameter, or ``QuantizedExperts`` under a load-time quantization."""
    method = cfg.quantization
    if method is None:
        return param(shape, dtype, axes, rngs=rngs)
    if method not in LOAD_TIME_METHODS:
        raise ValueError(f"{cfg.architecture}: {method!r} checkpoints of MoE models are not supported yet; "
                         f"supported for experts: fp8 checkpoints (per-tensor or per-channel scales) and "
                         f"quantization='fp8' or 'int8' at load time")
    return QuantizedExperts(shape, method, axes, rngs)


def _operand(weight) -> tuple:
    """(weight array, scale or None) of a plain or quantized expert weight."""
    if isinstance(weight, QuantizedExperts):
        return weight.qweight[...], weight.scale[...]
    return weight[...], None


def _specs(weight, axes, rules) -> tuple:
    """PartitionSpecs of ``_operand(weight)`` (a quantized weight's scale drops the contracted axis 1)."""
    scale_spec = logical_to_spec((axes[0], *axes[2:]), rules) if isinstance(weight, QuantizedExperts) else None
    return logical_to_spec(axes, rules), scale_spec


class SparseMoeBlock(nnx.Module):
    """Router [D, E] + E SwiGLU experts (gate_up [E, D, 2, F], down [E, F, D]); see the module docstring."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        self.router = param((d, e), jnp.float32 if cfg.moe_router_float32 else dtype, ("embed", None), rngs=rngs)
        self.routing = routing_of(cfg)  # None: softmax-top-k (``route``); else jaxllm.models.moe_routing
        # Ernie 4.5's e_score_correction_bias [E] (float32, as transformers keeps it)
        self.router_bias = param((e,), jnp.float32, (None,), init="zeros") if cfg.moe_correction_bias else None
        self.gate_up = _expert_weight((e, d, 2, f), dtype, GATE_UP_AXES, cfg, rngs)
        self.down = _expert_weight((e, f, d), dtype, DOWN_AXES, cfg, rngs)
        self.mesh = None  # set by bind_mesh after loading (static: part of the graph definition)
        self.specs = None  # (gate_up spec, down spec) on that mesh
        self.impl = cfg.moe_matmul_impl  # grouped matmul implementation (None: the dispatcher's default)
        self.clamp = None  # (alpha, limit) of a clamped SwiGLU (gpt-oss), else None

    def bind_mesh(self, mesh, rules) -> None:
        """Record the mesh the weights are sharded over and their PartitionSpecs (used to run per shard)."""
        self.mesh = mesh if mesh is not None and mesh.size > 1 else None
        self.specs = (_specs(self.gate_up, GATE_UP_AXES, rules), _specs(self.down, DOWN_AXES, rules))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., D] -> [..., D] in x's dtype."""
        with jax.named_scope("moe"):
            lead = x.shape[:-1]
            x2 = x.reshape(-1, x.shape[-1])
            weights, experts = self.route(x2)
            out = self._experts(x2, weights, experts)
            return out.reshape(*lead, x.shape[-1])

    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [T, D] -> (float32 weights [T, k], int32 experts [T, k]) by this block's router."""
        if self.routing is None:
            return route(x, self.router[...], self.top_k, self.norm_topk_prob)
        bias = None if self.router_bias is None else self.router_bias[...]
        return route_variant(x, self.router[...], self.top_k, self.norm_topk_prob, self.routing, bias)

    def _expert_biases(self) -> tuple[tuple[jax.Array, jax.Array], tuple] | None:
        """((gate_up bias [E, 2, F], down bias [E, D]), their PartitionSpecs) of a block whose experts have
        biases (gpt-oss); None here."""
        return None

    def _experts(self, x, weights, experts):
        gate_up, down = _operand(self.gate_up), _operand(self.down)
        biased = self._expert_biases()
        biases, bias_specs = biased or ((None, None), ())
        ffn = functools.partial(expert_ffn, impl=self.impl, clamp=self.clamp)
        if self.mesh is None:
            return ffn(x, weights, experts, gate_up, down, 0, biases=biases).astype(x.dtype)
        gate_up_spec, down_spec = self.specs
        experts_split = gate_up_spec[0][0] is not None

        def local(x, weights, experts, gate_up, down, *biases):
            index = jax.lax.axis_index(MODEL_AXIS)
            first = index * gate_up[0].shape[0] if experts_split else 0
            if biases and not experts_split:  # every device holds every expert's whole down bias: the first adds it
                biases = (biases[0], jnp.where(index == 0, biases[1], jnp.zeros_like(biases[1])))
            partial = ffn(x, weights, experts, gate_up, down, first, biases=biases or (None, None)).astype(x.dtype)
            return jax.lax.psum(partial, MODEL_AXIS)

        operands = (x, weights, experts, gate_up, down, *(biases if biased else ()))
        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(), P(), gate_up_spec, down_spec, *bias_specs),
                             out_specs=P(), check_vma=False)(*operands)


def bind_moe_mesh(model, mesh, rules) -> None:
    """Tell every SparseMoeBlock of ``model`` the mesh and sharding rules its experts were placed with."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, SparseMoeBlock):
            node.bind_mesh(mesh, rules)
