"""Router variants of the MoE families beyond softmax-top-k (``jaxllm.models.moe.route``), as transformers
computes them at inference.

Shape letters: T tokens, D model dim, E experts, k experts per token.

- "softmax" with a p-norm (DBRX's ``moe_normalize_expert_weights``), a clamped sum (Ernie 4.5's
  ``moe_norm_min``) or a correction bias (Ernie 4.5's ``e_score_correction_bias``: added to the probabilities
  to choose the top k, never to the weights).
- "sparsemixer" (PhiMoE): top-2 where each choice's weight is a softmax over only the experts whose logit is
  within a relative 2 * eps of that choice's logit (the second choice among the experts other than the first).
- "deepseek" (DeepSeek-V2 / V3): softmax or sigmoid scores; the choice reads scores + the correction bias
  (noaux_tc) restricted to the best ``topk_group`` of ``n_group`` expert groups (group_limited_greedy: by each
  group's top score; noaux_tc: by the sum of its top-2); the weights are the chosen experts' scores without the
  bias, renormalized when norm_topk_prob, times ``routed_scaling_factor``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Routing:
    """Static routing settings of a MoE block (part of its graph definition; hashable)."""

    kind: str = "softmax"  # "softmax", "sparsemixer" or "deepseek"
    jitter: float = 0.0  # sparsemixer's threshold eps (router_jitter_noise)
    norm_p: float = 1.0  # renormalize by the p-norm of the top-k weights (when norm_topk_prob)
    norm_min: float = 0.0  # lower clamp of that norm
    scoring: str = "softmax"  # deepseek: "softmax" or "sigmoid" scores
    topk_method: str = "greedy"  # deepseek: "greedy", "group_limited_greedy" or "noaux_tc"
    n_group: int = 1
    topk_group: int = 1
    scale: float = 1.0  # deepseek: routed_scaling_factor


def routing_of(cfg) -> Routing | None:
    """The block's ``Routing``, or None for plain softmax-top-k (``moe.route``)."""
    routing = Routing(cfg.moe_router, cfg.moe_router_jitter, cfg.moe_norm_p, cfg.moe_norm_min, cfg.moe_scoring_func,
                      cfg.moe_topk_method, cfg.moe_n_group, cfg.moe_topk_group, cfg.routed_scaling_factor)
    if routing == Routing() and not cfg.moe_correction_bias:
        return None
    if routing.kind not in ("softmax", "sparsemixer", "deepseek"):
        raise ValueError(f"moe_router={routing.kind!r} is not supported (only 'softmax', 'sparsemixer', "
                         "'deepseek')")
    return routing


def route_variant(x: jax.Array, router: jax.Array, top_k: int, norm_topk_prob: bool, routing: Routing,
                  bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """x [T, D], router [D, E], bias None or float32 [E] -> (float32 weights [T, k], int32 experts [T, k]). The
    logits in the router's dtype (Ernie 4.5 and DeepSeek keep it float32), the rest in float32."""
    logits = jnp.einsum("td,de->te", x.astype(router.dtype), router).astype(jnp.float32)
    if routing.kind == "sparsemixer":
        return sparsemixer(logits, routing.jitter)
    scores = jax.nn.sigmoid(logits) if routing.scoring == "sigmoid" else jax.nn.softmax(logits, axis=-1)
    choice = scores if bias is None else scores + bias.astype(jnp.float32)
    if routing.topk_method != "greedy" and routing.n_group > 1:
        keep = _group_mask(choice, routing.n_group, routing.topk_group, routing.topk_method)
        # (transformers: masked scores are 0 for group_limited_greedy, -inf for noaux_tc)
        choice = jnp.where(keep, choice, -jnp.inf if routing.topk_method == "noaux_tc" else 0.0)
    _, experts = jax.lax.top_k(choice, top_k)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    if norm_topk_prob:
        weights = weights / _norm(weights, routing)
    return weights * routing.scale, experts.astype(jnp.int32)


def _norm(weights: jax.Array, routing: Routing) -> jax.Array:
    """The renormalizing divisor [T, 1] of the top-k weights [T, k]."""
    if routing.kind == "deepseek":
        return jnp.sum(weights, axis=-1, keepdims=True) + 1e-20
    p = routing.norm_p
    norm = jnp.sum(weights, -1, keepdims=True) if p == 1.0 else \
        jnp.sum(jnp.abs(weights) ** p, -1, keepdims=True) ** (1.0 / p)
    return jnp.maximum(norm, routing.norm_min)


def _group_mask(choice: jax.Array, n_group: int, topk_group: int, method: str) -> jax.Array:
    """choice [T, E] -> bool [T, E]: the experts of each token's ``topk_group`` best groups (G = n_group)."""
    t, e = choice.shape
    grouped = choice.reshape(t, n_group, e // n_group)
    if method == "noaux_tc":
        group_scores = jnp.sum(jax.lax.top_k(grouped, 2)[0], axis=-1)  # [T, G]: sum of each group's top-2
    else:
        group_scores = jnp.max(grouped, axis=-1)
    _, best = jax.lax.top_k(group_scores, topk_group)  # [T, topk_group]
    keep = jnp.any(best[:, :, None] == jnp.arange(n_group)[None, None, :], axis=1)  # [T, G]
    return jnp.repeat(keep, e // n_group, axis=1)


def _masked_choice(scores: jax.Array, candidates: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """scores [T, E] (float32), candidates [T, E] (scores, -inf where excluded) -> (weight [T], expert [T]): the
    best candidate and its softmax probability among the candidates within (best - s) / max(|s|, best) <= 2 eps."""
    best = jnp.max(candidates, axis=-1, keepdims=True)
    expert = jnp.argmax(candidates, axis=-1)
    factor = jnp.maximum(jnp.abs(scores), best)
    kept = jnp.where((best - scores) / factor > 2 * eps, -jnp.inf, candidates)
    gates = jax.nn.softmax(kept, axis=-1)
    return jnp.take_along_axis(gates, expert[:, None], axis=-1)[:, 0], expert


def sparsemixer(scores: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """PhiMoE's inference routing: scores [T, E] float32 -> (weights [T, 2], experts int32 [T, 2])."""
    w1, e1 = _masked_choice(scores, scores, eps)
    others = jnp.where(jnp.arange(scores.shape[-1]) == e1[:, None], -jnp.inf, scores)
    w2, e2 = _masked_choice(scores, others, eps)
    return jnp.stack([w1, w2], -1), jnp.stack([e1, e2], -1).astype(jnp.int32)

