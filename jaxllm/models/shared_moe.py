"""Qwen2-MoE's sparse block: the routed experts of ``SparseMoeBlock`` plus a dense "shared expert" that every
token runs, scaled per token by sigmoid(x @ shared_expert_gate) (GraniteMoeShared, Ernie 4.5: not scaled).

Shape letters: T tokens (any leading dims), D model dim, F_s the shared expert's ffn dim (F_l on this device).
The shared expert is a ``GatedMLP`` of F_s (its weights shard over the ``mlp`` axis like any dense MLP, and
quantize like one); the gate [D, 1] is a plain replicated weight (vLLM keeps it unquantized too).

Under tensor parallelism the shared expert's plain (unquantized) weights run inside the experts' ``shard_map``:
each device adds its gated F_l-slice of the shared expert to its experts' partial sum, so one psum per layer
combines both (as vLLM reduces the block once). Quantized shared experts run as a dense sharded MLP beside it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxllm.config import ModelConfig
from jaxllm.models.layers import GatedMLP, param
from jaxllm.models.moe import SparseMoeBlock, _operand, expert_ffn
from jaxllm.parallel.sharding import MODEL_AXIS, logical_to_spec


class SharedExpertMoeBlock(SparseMoeBlock):
    """Routed experts + sigmoid-gated shared expert: x [..., D] -> [..., D] in x's dtype."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        super().__init__(cfg, dtype, rngs)
        self.shared_expert = GatedMLP(cfg, dtype, rngs, intermediate_size=cfg.shared_expert_intermediate_size)
        gated = cfg.shared_expert_gated  # (GraniteMoeShared, Ernie 4.5: the shared expert's output as it is)
        self.shared_expert_gate = param((cfg.hidden_size, 1), dtype, ("embed", None), rngs=rngs) if gated else None
        self.shared_specs = None  # (gate_up spec, down spec) when the shared expert runs inside the shard_map

    def bind_mesh(self, mesh, rules) -> None:
        super().bind_mesh(mesh, rules)
        mlp = self.shared_expert
        plain = all(isinstance(w, nnx.Param) for w in (mlp.gate_up, mlp.down)) and mlp.gate_up_bias is None
        if self.mesh is not None and plain:
            self.shared_specs = (logical_to_spec(mlp.gate_up.get_metadata()["logical_axes"], rules),
                                 logical_to_spec(mlp.down.get_metadata()["logical_axes"], rules))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.shared_expert_gate is None:
            gate = jnp.ones((*x.shape[:-1], 1), x.dtype)
        else:
            gate = jax.nn.sigmoid(jnp.einsum("...d,do->...o", x, self.shared_expert_gate[...]))  # [..., 1]
        if self.shared_specs is None:
            routed = super().__call__(x)
            with jax.named_scope("shared_expert"):
                return routed + gate * self.shared_expert(x)
        with jax.named_scope("moe"):
            x2, gate2 = x.reshape(-1, x.shape[-1]), gate.reshape(-1, 1)
            weights, experts = self.route(x2)
            return self._fused(x2, gate2, weights, experts).reshape(x.shape)

    def _fused(self, x, gate, weights, experts):
        """x [T, D], gate [T, 1] -> [T, D]: experts and shared expert per device, one psum."""
        (gate_up_spec, down_spec), shared_specs = self.specs, self.shared_specs
        experts_split = gate_up_spec[0][0] is not None
        act = self.shared_expert.act

        def local(x, gate, weights, experts, gate_up, down, shared_gate_up, shared_down):
            first = jax.lax.axis_index(MODEL_AXIS) * gate_up[0].shape[0] if experts_split else 0
            partial = expert_ffn(x, weights, experts, gate_up, down, first, self.impl)  # float32 [T, D]
            with jax.named_scope("shared_expert"):
                gu = jnp.einsum("td,dcf->tcf", x, shared_gate_up)
                shared = jnp.einsum("tf,fd->td", act(gu[:, 0]) * gu[:, 1], shared_down)
            return jax.lax.psum((partial.astype(x.dtype) + gate * shared).astype(x.dtype), MODEL_AXIS)

        gate_up, down = _operand(self.gate_up), _operand(self.down)
        return jax.shard_map(local, mesh=self.mesh,
                             in_specs=(P(), P(), P(), P(), gate_up_spec, down_spec, *shared_specs),
                             out_specs=P(), check_vma=False)(
            x, gate, weights, experts, gate_up, down, self.shared_expert.gate_up[...], self.shared_expert.down[...])


def moe_block(cfg: ModelConfig, dtype, rngs: nnx.Rngs) -> SparseMoeBlock:
    """The MoE block of ``cfg``'s family: with a shared expert (Qwen2-MoE, GraniteMoeShared, Ernie 4.5) or routed
    experts only; gpt-oss's biased, clamped-SwiGLU block."""
    if cfg.shared_expert_intermediate_size:
        return SharedExpertMoeBlock(cfg, dtype, rngs)
    if cfg.moe_activation == "clamped_swiglu":  # (gpt-oss: biased router and experts)
        from jaxllm.models.gpt_oss_moe import GptOssMoeBlock

        return GptOssMoeBlock(cfg, dtype, rngs)
    return SparseMoeBlock(cfg, dtype, rngs)
