"""Router variants of the MoE families beyond softmax-top-k (``jaxllm.models.moe.route``), as transformers
computes them at inference.

Shape letters: T tokens, D model dim, E experts, k experts per token.

- "softmax" with a p-norm (DBRX's ``moe_normalize_expert_weights``), a clamped sum (Ernie 4.5's
  ``moe_norm_min``) or a correction bias (Ernie 4.5's ``e_score_correction_bias``: added to the probabilities
  to choose the top k, never to the weights).
- "sparsemixer" (PhiMoE): top-2 where each choice's weight is a softmax over only the experts whose logit is
  within a relative 2 * eps of that choice's logit (the second choice among the experts other than the first).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Routing:
    """Static routing settings of a MoE block (part of its graph definition; hashable)."""

    kind: str = "softmax"  # "softmax" or "sparsemixer"
    jitter: float = 0.0  # sparsemixer's threshold eps (router_jitter_noise)
    norm_p: float = 1.0  # renormalize by the p-norm of the top-k weights (when norm_topk_prob)
    norm_min: float = 0.0  # lower clamp of that norm


def routing_of(cfg) -> Routing | None:
    """The block's ``Routing``, or None for plain softmax-top-k (``moe.route``)."""
    routing = Routing(cfg.moe_router, cfg.moe_router_jitter, cfg.moe_norm_p, cfg.moe_norm_min)
    if routing == Routing() and not cfg.moe_correction_bias:
        return None
    if routing.kind not in ("softmax", "sparsemixer"):
        raise ValueError(f"moe_router={routing.kind!r} is not supported (only 'softmax', 'sparsemixer')")
    return routing


def route_variant(x: jax.Array, router: jax.Array, top_k: int, norm_topk_prob: bool, routing: Routing,
                  bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """x [T, D], router [D, E], bias None or float32 [E] -> (float32 weights [T, k], int32 experts [T, k]). The
    logits in the router's dtype (Ernie 4.5 keeps it float32), the rest in float32."""
    logits = jnp.einsum("td,de->te", x.astype(router.dtype), router).astype(jnp.float32)  # (Ernie: float32)
    if routing.kind == "sparsemixer":
        return sparsemixer(logits, routing.jitter)
    probs = jax.nn.softmax(logits, axis=-1)
    choice = probs if bias is None else probs + bias.astype(jnp.float32)
    _, experts = jax.lax.top_k(choice, top_k)
    weights = jnp.take_along_axis(probs, experts, axis=-1)
    if norm_topk_prob:
        p = routing.norm_p
        norm = jnp.sum(weights, -1, keepdims=True) if p == 1.0 else \
            jnp.sum(jnp.abs(weights) ** p, -1, keepdims=True) ** (1.0 / p)
        weights = weights / jnp.maximum(norm, routing.norm_min)
    return weights, experts.astype(jnp.int32)


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
