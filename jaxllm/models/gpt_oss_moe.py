"""gpt-oss's sparse block: ``SparseMoeBlock``'s sorted-rows grouped matmuls with a biased router, expert biases
and the clamped SwiGLU (transformers' GptOssMLP).

Shape letters: T tokens, D model dim, E experts (E_l on this device), F expert ffn dim (F_l on this device),
S slots of the routed rows (``jaxllm.ops.grouped_matmul.GroupedLayout``), k experts per token.

- Router: logits = x @ W + b ([T, E]); the top k logits, softmaxed among themselves (float32).
- Expert: gu = x @ gate_up + gate_up_bias ([2, F]); g = min(gate, limit), u = clip(up, -limit, limit);
  h = (u + 1) * g * sigmoid(alpha * g); y = h @ down + down_bias. The checkpoint interleaves gate and up on
  gate_up's last axis; the loader de-interleaves them into [E, D, 2, F] (jaxllm.weights.mappings_gpt_oss).

The biases (indexed by each slot's expert) and the clamped SwiGLU run in the grouped matmuls' epilogues
(jaxllm.ops.grouped_matmul: in the Pallas kernel's registers on the GPU). Under tensor parallelism (Megatron style, F split) every device
computes its F_l-slice and only the first device adds the down bias, so the psum counts it once; with
``enable_expert_parallel`` each device holds its experts' biases and adds them to its own rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.layers import param
from jaxllm.models.moe import SparseMoeBlock
from jaxllm.parallel.sharding import logical_to_spec

GATE_UP_BIAS_AXES = ("expert", None, "moe_mlp")  # [E, 2, F]
DOWN_BIAS_AXES = ("expert", None)  # [E, D]


class GptOssMoeBlock(SparseMoeBlock):
    """Biased router + biased clamped-SwiGLU experts: x [..., D] -> [..., D] in x's dtype (module docstring)."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        super().__init__(cfg, dtype, rngs)
        e, d, f = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.router_logit_bias = param((e,), self.router[...].dtype, (None,), init="zeros")
        self.gate_up_bias = param((e, 2, f), dtype, GATE_UP_BIAS_AXES, init="zeros")
        self.down_bias = param((e, d), dtype, DOWN_BIAS_AXES, init="zeros")
        self.clamp = (cfg.swiglu_alpha, cfg.swiglu_limit)
        self.bias_specs = None

    def bind_mesh(self, mesh, rules) -> None:
        super().bind_mesh(mesh, rules)
        self.bias_specs = (logical_to_spec(GATE_UP_BIAS_AXES, rules), logical_to_spec(DOWN_BIAS_AXES, rules))

    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [T, D] -> (float32 weights [T, k]: softmax of the top-k biased logits, int32 experts [T, k])."""
        logits = jnp.einsum("td,de->te", x, self.router[...]) + self.router_logit_bias[...]
        top, experts = jax.lax.top_k(logits.astype(jnp.float32), self.top_k)
        return jax.nn.softmax(top, axis=-1), experts.astype(jnp.int32)

    def _expert_biases(self):
        return (self.gate_up_bias[...], self.down_bias[...]), self.bias_specs
