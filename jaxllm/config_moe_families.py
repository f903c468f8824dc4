"""``ModelConfig`` fields of the mixture-of-experts families GraniteMoe, GraniteMoeShared, PhiMoE, DBRX and
Ernie 4.5 MoE read from a HF ``config.json`` (no jax here; Mixtral / Qwen-MoE / OLMoE: ``config_families``).

- GraniteMoe(Shared): Granite's four multipliers; every layer sparse, experts of ``intermediate_size``, softmax
  over the top-k logits (= top-k probabilities renormalized); GraniteMoeShared adds an ungated dense
  ``shared_mlp`` of ``shared_intermediate_size`` (0: none).
- PhiMoE: LayerNorm with biases (eps ``rms_norm_eps``), q/k/v/o biases by ``attention_bias``, longrope with
  ``short_mscale`` / ``long_mscale`` (per sequence, as Phi-3: a sequence longer than
  ``original_max_position_embeddings`` takes the long factors and ``long_mscale``, as vLLM and the original
  Phi-3.5-MoE code do; transformers' PhimoeRotaryEmbedding keeps the short factors there), an lm_head bias by
  ``lm_head_bias``, sparsemixer top-2 routing (``router_jitter_noise`` is its threshold), a sliding window on
  every layer when ``sliding_window`` is set.
- DBRX: a nested config (``attn_config`` / ``ffn_config``, rewritten by ``moe_family_hf`` to the shared names),
  fused ``Wqkv`` clamped to ``clip_qkv``, LayerNorm without bias (eps 1e-5), softmax top-k weights divided by
  their ``moe_normalize_expert_weights``-norm (null: not normalized).
- Ernie 4.5 MoE: ``moe_k`` of ``moe_num_experts`` in the layers i with (i + 1) % ``moe_layer_interval`` == 0
  and ``moe_layer_start_index`` <= i <= ``moe_layer_end_index``; top-k chosen on probabilities plus the
  router's ``e_score_correction_bias`` (weights without it) and renormalized with the sum clamped at
  ``moe_norm_min``; ``moe_num_shared_experts`` ungated shared experts (one MLP of that many times
  ``moe_intermediate_size``); interleaved rope; no biases (``use_bias=True`` is a ValueError).
"""

from __future__ import annotations

from typing import Any

GRANITE_MOE = "GraniteMoeForCausalLM"
GRANITE_MOE_SHARED = "GraniteMoeSharedForCausalLM"
PHIMOE = "PhimoeForCausalLM"
DBRX = "DbrxForCausalLM"
ERNIE_MOE = "Ernie4_5_MoeForCausalLM"
MOE2_ARCHS = (GRANITE_MOE, GRANITE_MOE_SHARED, PHIMOE, DBRX, ERNIE_MOE)
MOE2_MODEL_TYPES = {"granitemoe": GRANITE_MOE, "granitemoeshared": GRANITE_MOE_SHARED, "phimoe": PHIMOE,
                    "dbrx": DBRX, "ernie4_5_moe": ERNIE_MOE}

# transformers' config-class defaults of fields a config.json may leave out (see config_families.HF_DEFAULTS)
MOE2_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    GRANITE_MOE: {"num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 2048},
    GRANITE_MOE_SHARED: {"num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 2048},
    PHIMOE: {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_theta": 1e6, "num_local_experts": 16,
             "num_experts_per_tok": 2, "router_jitter_noise": 0.01},
    DBRX: {},
    ERNIE_MOE: {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_theta": 500000.0,
                "tie_word_embeddings": True, "moe_intermediate_size": 1536, "moe_k": 6, "moe_num_experts": 64,
                "moe_num_shared_experts": 2, "moe_layer_start_index": 1, "moe_layer_end_index": -1,
                "moe_layer_interval": 1, "moe_norm_min": 1e-12},
}


def moe_family_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """DBRX's nested config with its fields under the shared names (``hidden_size``, ``num_hidden_layers``,
    ``num_key_value_heads``, ``intermediate_size``, ``rope_theta``, ``clip_qkv``, ...); other configs unchanged."""
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "dbrx" and (archs[0] if archs else None) != DBRX:  # (also DbrxModel configs)
        return hf
    attn, ffn = dict(hf.get("attn_config") or {}), dict(hf.get("ffn_config") or {})
    act = (ffn.get("ffn_act_fn") or {}).get("name", "silu")
    out = {**hf, "hidden_size": hf.get("d_model", 2048), "num_attention_heads": hf.get("n_heads", 16),
           "num_hidden_layers": hf.get("n_layers", 24), "max_position_embeddings": hf.get("max_seq_len", 2048),
           "num_key_value_heads": attn.get("kv_n_heads", 1), "clip_qkv": attn.get("clip_qkv"),
           "intermediate_size": ffn.get("ffn_hidden_size", 3584), "num_local_experts": ffn.get("moe_num_experts", 4),
           "num_experts_per_tok": ffn.get("moe_top_k", 1), "hidden_act": act, "rms_norm_eps": 1e-5,
           "moe_normalize_expert_weights": ffn.get("moe_normalize_expert_weights", 1.0)}
    if not hf.get("rope_parameters"):
        out["rope_theta"] = attn.get("rope_theta", 10000.0)
    out.pop("head_dim", None)  # (DBRX's head dim is d_model / n_heads)
    return out


def _experts(hf: dict[str, Any], arch: str, num_key: str, k_key: str) -> tuple[int, int]:
    e, k = int(hf.get(num_key) or 0), int(hf.get(k_key) or 0)
    if e < 1 or not 1 <= k <= e:
        raise ValueError(f"{arch}: {num_key}={e} and {k_key}={k} must satisfy 1 <= {k_key} <= {num_key}")
    return e, k


def moe2_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """The ModelConfig fields (MoE and family) of ``arch``; {} for the other architectures."""
    if arch not in MOE2_ARCHS:
        return {}
    if arch == ERNIE_MOE:
        return _ernie_fields(hf, num_layers)
    e, k = _experts(hf, arch, "num_local_experts", "num_experts_per_tok")
    moe = {"num_experts": e, "num_experts_per_tok": k, "moe_intermediate_size": int(hf["intermediate_size"]),
           "moe_layers": (True,) * num_layers}
    if arch in (GRANITE_MOE, GRANITE_MOE_SHARED):
        from jaxllm.config_families_extra import GRANITE, extra_family_fields

        shared = int(hf.get("shared_intermediate_size") or 0) if arch == GRANITE_MOE_SHARED else 0
        return {**moe, **extra_family_fields(hf, GRANITE, num_layers), "norm_topk_prob": True,
                "shared_expert_intermediate_size": shared, "shared_expert_gated": False}
    if arch == PHIMOE:
        if k != 2:
            raise ValueError(f"{arch}: num_experts_per_tok={k} is not supported (sparsemixer routing picks 2)")
        return {**moe, "moe_router": "sparsemixer", "moe_router_jitter": float(hf["router_jitter_noise"]),
                "norm_type": "layer", "norm_bias": True, "lm_head_bias": bool(hf.get("lm_head_bias"))}
    p = hf.get("moe_normalize_expert_weights")
    if p is not None and not (isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0):
        raise ValueError(f"{arch}: moe_normalize_expert_weights={p!r} must be a positive number or null")
    if hf.get("tie_word_embeddings"):
        raise ValueError(f"{arch}: tie_word_embeddings=True is not supported (DBRX has its own lm_head)")
    clip = hf.get("clip_qkv")
    if clip is not None and not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0):
        raise ValueError(f"{arch}: clip_qkv={clip!r} must be a positive number or null")
    return {**moe, "norm_topk_prob": p is not None, "moe_norm_p": 1.0 if p is None else float(p),
            "clip_qkv": None if clip is None else float(clip),
            "norm_type": "layer", "norm_bias": False}


def _ernie_fields(hf: dict[str, Any], num_layers: int) -> dict[str, Any]:
    e, k = _experts(hf, ERNIE_MOE, "moe_num_experts", "moe_k")
    start, interval = int(hf["moe_layer_start_index"]), int(hf["moe_layer_interval"])
    end = int(hf["moe_layer_end_index"])
    end = num_layers - 1 if end == -1 else end
    if interval < 1:
        raise ValueError(f"{ERNIE_MOE}: moe_layer_interval={interval} must be >= 1")
    if hf.get("use_bias"):
        raise ValueError(f"{ERNIE_MOE}: use_bias={hf['use_bias']!r} is not supported (only false)")
    shared = int(hf["moe_num_shared_experts"] or 0) * int(hf["moe_intermediate_size"])
    return {"num_experts": e, "num_experts_per_tok": k, "moe_intermediate_size": int(hf["moe_intermediate_size"]),
            "moe_layers": tuple((i + 1) % interval == 0 and start <= i <= end for i in range(num_layers)),
            "norm_topk_prob": True, "moe_norm_min": float(hf["moe_norm_min"] or 0.0), "moe_correction_bias": True,
            "moe_router_float32": True,
            "shared_expert_intermediate_size": shared, "shared_expert_gated": False, "rope_interleaved": True}
