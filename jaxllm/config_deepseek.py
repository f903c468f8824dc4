"""``ModelConfig`` fields of DeepSeek-V2 / V3 read from a HF ``config.json`` (no jax here).

Multi-head latent attention (MLA): q through a low-rank ``q_a_proj`` -> ``q_a_layernorm`` -> ``q_b_proj`` (or one
``q_proj`` when ``q_lora_rank`` is null); k/v from a shared latent ``kv_a_proj_with_mqa`` [D, kv_lora_rank +
qk_rope_head_dim] -> ``kv_a_layernorm`` -> ``kv_b_proj`` per head. q/k heads are qk_nope_head_dim + qk_rope_head_dim
wide (only the rope part rotates, by adjacent pairs), v heads v_head_dim wide. The paged cache stores the per-head
K and V (V zero-padded to K's width), so ``head_dim`` is max(qk_nope + qk_rope, v) and ``num_kv_heads`` the number
of heads (jaxllm.models.mla).

DeepSeek MoE: ``n_routed_experts`` experts of ``moe_intermediate_size``, ``num_experts_per_tok`` per token, one
fused shared MLP of ``n_shared_experts * moe_intermediate_size`` (no gate); layer i is sparse when i >=
``first_k_dense_replace`` and i % ``moe_layer_freq`` == 0 (vLLM's rule), else a dense MLP of ``intermediate_size``.
Routing (jaxllm.models.deepseek_moe): softmax (V2) or sigmoid (V3) scores; ``topk_method`` greedy,
group_limited_greedy (the best ``topk_group`` of ``n_group`` groups by their top score) or noaux_tc (V3: groups by
the sum of their top-2 scores plus ``e_score_correction_bias``, the bias used for the choice only); the chosen
scores renormalized when ``norm_topk_prob``, times ``routed_scaling_factor``.
"""

from __future__ import annotations

from typing import Any

DEEPSEEK_V2 = "DeepseekV2ForCausalLM"
DEEPSEEK_V3 = "DeepseekV3ForCausalLM"
DEEPSEEK_ARCHS = (DEEPSEEK_V2, DEEPSEEK_V3)
TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
SCORING_FUNCS = ("softmax", "sigmoid")

# transformers' config-class defaults of the fields a config.json may leave out
_DEFAULTS: dict[str, dict[str, Any]] = {
    DEEPSEEK_V2: {"kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                  "v_head_dim": 128, "n_routed_experts": 64, "n_shared_experts": 2, "moe_intermediate_size": 1407,
                  "first_k_dense_replace": 0, "routed_scaling_factor": 1.0, "topk_method": "greedy",
                  "scoring_func": "softmax", "norm_topk_prob": False},
    DEEPSEEK_V3: {"kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                  "v_head_dim": 128, "n_routed_experts": 256, "n_shared_experts": 1, "moe_intermediate_size": 2048,
                  "first_k_dense_replace": 3, "routed_scaling_factor": 2.5, "topk_method": "noaux_tc",
                  "scoring_func": "sigmoid", "norm_topk_prob": True, "n_group": 8, "topk_group": 4,
                  "num_experts_per_tok": 8, "max_position_embeddings": 4096, "rope_interleave": True},
}


def deepseek_arch(hf: dict[str, Any]) -> str | None:
    """The DeepSeek architecture of a config.json dict (``architectures``, else ``model_type``: a pooling
    checkpoint's ``DeepseekV3Model`` / ``...ForSequenceClassification`` reads as its causal LM), or None."""
    archs = hf.get("architectures") or [None]
    if archs[0] in DEEPSEEK_ARCHS:
        return archs[0]
    return {"deepseek_v2": DEEPSEEK_V2, "deepseek_v3": DEEPSEEK_V3}.get(hf.get("model_type"))


def deepseek_hf(hf: dict[str, Any], arch: str) -> dict[str, Any]:
    """``hf`` with transformers' defaults filled in and the attention dims the shared parsing reads set for the
    paged cache: ``head_dim`` = max(qk_nope + qk_rope, v) (transformers' config writes the rope dim there) and
    one kv head per head (a V3 config's ``num_key_value_heads`` is not used by MLA). Other architectures: ``hf``."""
    if arch not in DEEPSEEK_ARCHS:
        return hf
    hf = {**_DEFAULTS[arch], **hf}  # (a null q_lora_rank stays null: one q_proj)
    qk = int(hf["qk_nope_head_dim"]) + int(hf["qk_rope_head_dim"])
    return {**hf, "head_dim": max(qk, int(hf["v_head_dim"])), "num_key_value_heads": hf["num_attention_heads"]}


def _positive_int(hf: dict[str, Any], key: str, allow_zero: bool = False) -> int:
    value = hf.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{key}={value!r} must be a {'non-negative' if allow_zero else 'positive'} integer")
    return value


def _routing_fields(hf: dict[str, Any], arch: str) -> dict[str, Any]:
    """The router's scoring, top-k method and groups (V3 always scores by sigmoid with the correction bias)."""
    method = hf.get("topk_method") or ("noaux_tc" if arch == DEEPSEEK_V3 else "greedy")
    scoring = hf.get("scoring_func") or ("sigmoid" if arch == DEEPSEEK_V3 else "softmax")
    if arch == DEEPSEEK_V3 and (method, scoring) != ("noaux_tc", "sigmoid"):
        raise ValueError(f"{arch}: topk_method={method!r} with scoring_func={scoring!r} is not supported; "
                         "DeepseekV3 routes by sigmoid scores with noaux_tc (use DeepseekV2ForCausalLM otherwise)")
    if method not in TOPK_METHODS:
        raise ValueError(f"topk_method={method!r} is not supported; supported: {', '.join(TOPK_METHODS)}")
    if scoring not in SCORING_FUNCS:
        raise ValueError(f"scoring_func={scoring!r} is not supported; supported: {', '.join(SCORING_FUNCS)}")
    experts = _positive_int(hf, "n_routed_experts")
    groups = (1, 1)
    if method != "greedy":
        groups = (_positive_int(hf, "n_group"), _positive_int(hf, "topk_group"))
        if experts % groups[0] or not groups[1] <= groups[0]:
            raise ValueError(f"n_group={groups[0]} must divide n_routed_experts={experts} and topk_group="
                             f"{groups[1]} must be <= n_group")
    return {"moe_scoring_func": scoring, "moe_topk_method": method, "moe_n_group": groups[0],
            "moe_topk_group": groups[1], "routed_scaling_factor": float(hf.get("routed_scaling_factor") or 1.0)}


def deepseek_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """The MLA and DeepSeek-MoE fields of ModelConfig (an empty dict for the other architectures)."""
    if arch not in DEEPSEEK_ARCHS:
        return {}
    if hf.get("attention_bias"):
        raise ValueError(f"{arch}: attention_bias=True is not supported (DeepSeek checkpoints have no attention "
                         "biases)")
    q_lora = hf.get("q_lora_rank")
    experts = _positive_int(hf, "n_routed_experts")
    top_k = _positive_int(hf, "num_experts_per_tok")
    if top_k > experts:
        raise ValueError(f"num_experts_per_tok={top_k} must be <= n_routed_experts={experts}")
    first_dense = _positive_int(hf, "first_k_dense_replace", allow_zero=True)
    freq = _positive_int({"moe_layer_freq": hf.get("moe_layer_freq", 1)}, "moe_layer_freq")
    shared = _positive_int(hf, "n_shared_experts", allow_zero=True) if hf.get("n_shared_experts") else 0
    moe_f = _positive_int(hf, "moe_intermediate_size")
    return {
        "q_lora_rank": 0 if q_lora is None else _positive_int(hf, "q_lora_rank"),
        "kv_lora_rank": _positive_int(hf, "kv_lora_rank"),
        "qk_nope_head_dim": _positive_int(hf, "qk_nope_head_dim"),
        "rotary_dim": _positive_int(hf, "qk_rope_head_dim"),
        "v_head_dim": _positive_int(hf, "v_head_dim"),
        # V2 rotates adjacent pairs (its complex form); V3 too unless rope_interleave is false
        "rope_interleaved": arch == DEEPSEEK_V2 or bool(hf.get("rope_interleave", True)),
        "num_experts": experts, "num_experts_per_tok": top_k, "moe_intermediate_size": moe_f,
        "norm_topk_prob": bool(hf.get("norm_topk_prob")),
        "moe_layers": tuple(i >= first_dense and i % freq == 0 for i in range(num_layers)),
        "shared_expert_intermediate_size": shared * moe_f, "shared_expert_gated": False,
        "moe_router_float32": True,  # (transformers keeps the router weight and logits in float32)
        "num_nextn_predict_layers": int(hf.get("num_nextn_predict_layers") or 0),
        **_routing_fields(hf, arch),
    }


# the attention implementations that take the latent cache's 576-wide head (the Pallas kernels stop at 256)
LATENT_CACHE_BACKENDS = ("reference", "chunked")


def mla_cache_fields(cfg, attention_backend: str | None) -> dict[str, Any]:
    """The cache layout of an MLA model for ``attention_backend`` (the LLM keyword): with a jnp implementation
    ("reference" / "chunked") the cache holds the compressed latent [c_kv, k_pe] as one kv head of kv_lora_rank +
    qk_rope_head_dim (576) values, vLLM's MLA cache; otherwise (None: the Pallas kernels on GPUs) per-head K / V of
    ``head_dim``, which those kernels take. As vLLM, where the attention backend decides the MLA layout. Empty
    for other models."""
    if not cfg.kv_lora_rank or attention_backend not in LATENT_CACHE_BACKENDS:
        return {}
    return {"mla_latent_cache": True, "num_kv_heads": 1, "head_dim": cfg.kv_lora_rank + cfg.rotary_dim}


def mla_softmax_scale(cfg) -> float:
    """(qk_nope + qk_rope) ** -0.5, times mscale(factor, mscale_all_dim) ** 2 under a YaRN rope with
    ``mscale_all_dim`` (transformers' ``yarn_apply_mscale``; vLLM's DeepseekV2 attention)."""
    import math

    scale = (cfg.qk_nope_head_dim + cfg.rotary_dim) ** -0.5
    rope = cfg.rope
    mscale_all_dim = rope.get("mscale_all_dim") if rope.rope_type != "default" else None
    if mscale_all_dim:
        factor = float(rope.get("factor"))
        mscale = 1.0 if factor <= 1 else 0.1 * float(mscale_all_dim) * math.log(factor) + 1.0
        scale = scale * mscale * mscale
    return scale


def mla_linear_params(cfg) -> int:
    """Linear weights of one MLA attention block: q_a + q_b (or q_proj), kv_a, kv_b, o_proj."""
    d, h, qk = cfg.hidden_size, cfg.num_heads, cfg.qk_nope_head_dim + cfg.rotary_dim
    q = (d + h * qk) * cfg.q_lora_rank if cfg.q_lora_rank else d * h * qk
    kv = d * (cfg.kv_lora_rank + cfg.rotary_dim) + cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    return q + kv + h * cfg.v_head_dim * d


def mla_attention_params(cfg) -> int:
    """Weights of one MLA attention block: its linear weights and the two latent norms [Rq], [Rkv]."""
    return mla_linear_params(cfg) + cfg.q_lora_rank + cfg.kv_lora_rank
