"""Qwen2-MoE's sparse block: the routed experts of ``SparseMoeBlock`` plus a dense "shared expert" that every
token runs, scaled per token by sigmoid(x @ shared_expert_gate).

Shape letters: T tokens (any leading dims), D model dim, F_s the shared expert's ffn dim. The shared expert is a
``GatedMLP`` of F_s (its weights shard over the ``mlp`` axis like any dense MLP, and quantize like one); the gate
[D, 1] is a plain replicated weight (vLLM keeps it unquantized too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.layers import GatedMLP, param
from jaxllm.models.moe import SparseMoeBlock


class SharedExpertMoeBlock(SparseMoeBlock):
    """Routed experts + sigmoid-gated shared expert: x [..., D] -> [..., D] in x's dtype."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        super().__init__(cfg, dtype, rngs)
        self.shared_expert = GatedMLP(cfg, dtype, rngs, intermediate_size=cfg.shared_expert_intermediate_size)
        self.shared_expert_gate = param((cfg.hidden_size, 1), dtype, ("embed", None), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        routed = super().__call__(x)
        with jax.named_scope("shared_expert"):
            gate = jax.nn.sigmoid(jnp.einsum("...d,do->...o", x, self.shared_expert_gate[...]))  # [..., 1]
            return routed + gate * self.shared_expert(x)


def moe_block(cfg: ModelConfig, dtype, rngs: nnx.Rngs) -> SparseMoeBlock:
    """The MoE block of ``cfg``'s family: with a shared expert (Qwen2-MoE) or routed experts only."""
    if cfg.shared_expert_intermediate_size:
        return SharedExpertMoeBlock(cfg, dtype, rngs)
    return SparseMoeBlock(cfg, dtype, rngs)
