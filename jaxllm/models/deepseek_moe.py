"""DeepSeek-V2 / V3 MoE block: DeepSeek's router (expert groups, V3's score-correction bias) in front of the
grouped-matmul experts of ``SparseMoeBlock``, plus the shared experts (one fused ungated MLP).

Shape letters: T tokens, D model dim, E routed experts, G expert groups (``n_group``), k experts per token.
Routing (float32, as transformers keeps the router in float32): scores = softmax (V2) or sigmoid (V3) of x @ W;
the choice reads scores + ``e_score_correction_bias`` (noaux_tc only) restricted to the best ``topk_group`` groups
(group_limited_greedy: by each group's top score; noaux_tc: by the sum of its top-2); the weights are the chosen
experts' scores without the bias, renormalized when ``norm_topk_prob``, times ``routed_scaling_factor``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.layers import GatedMLP, param
from jaxllm.models.moe import SparseMoeBlock


def _group_mask(choice: jax.Array, n_group: int, topk_group: int, method: str) -> jax.Array:
    """choice [T, E] -> bool [T, E]: the experts of each token's ``topk_group`` best groups."""
    t, e = choice.shape
    grouped = choice.reshape(t, n_group, e // n_group)
    if method == "noaux_tc":
        group_scores = jnp.sum(jax.lax.top_k(grouped, 2)[0], axis=-1)  # [T, G]: sum of each group's top-2
    else:
        group_scores = jnp.max(grouped, axis=-1)
    _, best = jax.lax.top_k(group_scores, topk_group)  # [T, topk_group]
    keep = jnp.any(best[:, :, None] == jnp.arange(n_group)[None, None, :], axis=1)  # [T, G]
    return jnp.repeat(keep, e // n_group, axis=1)


def deepseek_route(x: jax.Array, router: jax.Array, bias: jax.Array | None, cfg: ModelConfig):
    """x [T, D], router [D, E] float32, bias [E] or None -> (float32 weights [T, k], int32 experts [T, k])."""
    logits = jnp.einsum("td,de->te", x.astype(jnp.float32), router.astype(jnp.float32))
    if cfg.moe_scoring_func == "sigmoid":
        scores = jax.nn.sigmoid(logits)
    else:
        scores = jax.nn.softmax(logits, axis=-1)
    choice = scores if bias is None else scores + bias.astype(jnp.float32)
    method = cfg.moe_topk_method
    if method != "greedy" and cfg.moe_n_group > 1:
        keep = _group_mask(choice, cfg.moe_n_group, cfg.moe_topk_group, method)
        # (transformers: masked scores are 0 for group_limited_greedy, -inf for noaux_tc)
        choice = jnp.where(keep, choice, -jnp.inf if method == "noaux_tc" else 0.0)
    _, experts = jax.lax.top_k(choice, cfg.num_experts_per_tok)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    if cfg.norm_topk_prob:
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights * cfg.routed_scaling_factor, experts.astype(jnp.int32)


class DeepseekMoeBlock(SparseMoeBlock):
    """SparseMoeBlock's float32 router [D, E] (``moe_router_float32``) and routed experts with DeepSeek's routing
    (+ ``e_score_correction_bias`` [E] for noaux_tc), plus the shared experts: x [..., D] -> [..., D] in x's dtype.

    Under tensor parallelism the routed experts run per device in SparseMoeBlock's shard_map (ffn dim or, with
    enable_expert_parallel, whole experts split); the shared experts are a dense MLP split over ``mlp`` like any
    other (XLA adds its row-parallel sum)."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        super().__init__(cfg, dtype, rngs)
        noaux = cfg.moe_topk_method == "noaux_tc"
        self.e_score_correction_bias = param((cfg.num_experts,), jnp.float32, (None,), init="zeros") if noaux else None
        shared = cfg.shared_expert_intermediate_size
        self.shared_experts = GatedMLP(cfg, dtype, rngs, intermediate_size=shared) if shared else None
        self.route_cfg = cfg  # (static: the routing fields)

    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        bias = None if self.e_score_correction_bias is None else self.e_score_correction_bias[...]
        return deepseek_route(x, self.router[...], bias, self.route_cfg)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = super().__call__(x)
        if self.shared_experts is None:
            return out
        with jax.named_scope("shared_experts"):
            return out + self.shared_experts(x)
