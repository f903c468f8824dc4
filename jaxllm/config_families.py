"""Per-family fields of ``ModelConfig`` read from a HF ``config.json`` (no jax here).

The shared decoder layer is one module with a few options; this file says which options each architecture
sets: activation, norm style and placement, q/k norms, attention scale and logit soft-capping, per-layer
sliding windows and rope settings (Gemma 3's local/global ropes, Phi-3's longrope), fused checkpoint weights.

Both config formats are read: transformers 4.x (``rope_theta``, ``rope_scaling``, ``rope_local_base_freq``,
``sliding_window_pattern``) and 5.x (``rope_parameters``, per layer type for Gemma 3; ``layer_types``).
"""

from __future__ import annotations

from typing import Any

from jaxllm.config_dense import checked_layer_types, dense_sliding_windows
from jaxllm.config_families_extra import EXTRA_HF_DEFAULTS, OLMOE, QWEN2_MOE, extra_sliding_windows

MOE_ARCHITECTURES = ("MixtralForCausalLM", "Qwen3MoeForCausalLM", QWEN2_MOE, OLMOE)
GEMMA_ARCHS = ("GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM")
# Multimodal checkpoints whose language model we run (text prompts; the vision tower is not loaded):
# architecture -> (its text architecture, checkpoint key prefixes of the language model -> "model.")
TEXT_OF_MULTIMODAL = {"Gemma3ForConditionalGeneration": "Gemma3ForCausalLM"}


def text_config_of_multimodal(hf: dict[str, Any]) -> dict[str, Any]:
    """A multimodal Gemma 3 config.json -> the text model's config dict. Hub configs list only the text
    fields that differ from transformers' defaults, so ``Gemma3TextConfig`` fills the rest (as transformers and
    vLLM read it); token ids and dtype come from the top level when the text config has none."""
    import transformers

    text = dict(hf.get("text_config") or {})
    text.pop("architectures", None)
    full = transformers.Gemma3TextConfig(**text).to_dict()
    for key in ("eos_token_id", "bos_token_id", "pad_token_id", "dtype", "torch_dtype", "quantization_config"):
        if hf.get(key) is not None and (key not in text or text.get(key) is None):
            full[key] = hf[key]
    full["architectures"] = [TEXT_OF_MULTIMODAL[hf["architectures"][0]]]
    return full
FUSED_ARCHS = ("Phi3ForCausalLM",)  # checkpoints with qkv_proj / gate_up_proj

# The norms of a decoder layer per ``cfg.norm_placement`` (HF names; the checkpoint keys use them too). "pre":
# x + attn(in(x)), then x + mlp(post_attention(x)). "sandwich": x + post_attention(attn(in(x))), then
# x + post_feedforward(mlp(pre_feedforward(x))). "post": x + post_attention(attn(x)), x + post_feedforward(mlp(x)).
LAYER_NORMS = {
    "pre": ("input_layernorm", "post_attention_layernorm"),
    "sandwich": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                 "post_feedforward_layernorm"),
    "post": ("post_attention_layernorm", "post_feedforward_layernorm"),
    "parallel": ("input_layernorm",),  # Cohere: x + attn(in(x)) + mlp(in(x))
    # GPT-NeoX's parallel residual: x + attn(in(x)) + mlp(post_attention(x))
    "parallel_two": ("input_layernorm", "post_attention_layernorm"),
    # OPT's post-norm: x = in(x + attn(x)), then x = post_attention(x + mlp(x))
    "post_residual": ("input_layernorm", "post_attention_layernorm"),
}

# activation name -> ours ("silu", "gelu_tanh", "gelu")
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu", "relu": "relu", "relu2": "relu2"}


def activation(hf: dict[str, Any], arch: str) -> str:
    """The MLP activation, from the field transformers' modeling code reads: Gemma 1 ``hidden_act`` (its legacy
    "gelu" meaning the tanh approximation, as GemmaConfig rewrites it), Gemma 2/3 ``hidden_activation`` (both
    default to gelu-tanh), the others ``hidden_act``."""
    if arch == "GemmaForCausalLM":
        name = hf.get("hidden_act") or "gelu_pytorch_tanh"
        name = "gelu_pytorch_tanh" if name == "gelu" else name
    elif arch in GEMMA_ARCHS:
        name = hf.get("hidden_activation") or "gelu_pytorch_tanh"
    else:
        name = hf.get("hidden_act", "silu")
    if name not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r} is not supported; supported: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


# transformers' config-class defaults of fields a config.json may leave out, where they differ from the generic
# fallbacks of ``ModelConfig.from_hf`` (rms_norm_eps 1e-6, rope_theta 10000, max_position_embeddings 2048, no
# sliding window): a hand-written config means what transformers (and vLLM, reading it through transformers) make
# of it. (Head counts and head_dim keep the generic fallbacks: real configs always state them.)
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "MistralForCausalLM": {"max_position_embeddings": 131072, "sliding_window": 4096},
    "Qwen2ForCausalLM": {"max_position_embeddings": 32768, "sliding_window": 4096},
    "Qwen3ForCausalLM": {"max_position_embeddings": 32768, "sliding_window": 4096},
    "GemmaForCausalLM": {"max_position_embeddings": 8192},
    "Gemma2ForCausalLM": {"max_position_embeddings": 8192, "sliding_window": 4096},
    "Gemma3ForCausalLM": {"max_position_embeddings": 131072, "sliding_window": 4096},
    "Phi3ForCausalLM": {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096},
    "Olmo2ForCausalLM": {"rms_norm_eps": 1e-5},
    "MixtralForCausalLM": {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "max_position_embeddings": 131072},
    "Qwen3MoeForCausalLM": {"max_position_embeddings": 32768, "sliding_window": 4096},
    **EXTRA_HF_DEFAULTS,
}

# Families whose attention has no biases whatever ``attention_bias`` says (transformers' Mistral, Mixtral, Phi-3),
# and Qwen2, whose q/k/v always have biases and o_proj never.
_NO_ATTENTION_BIAS = ("MistralForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM")


def attention_biases(hf: dict[str, Any], arch: str) -> dict[str, bool]:
    """ModelConfig's ``attention_bias`` (q/k/v) and ``attention_out_bias`` (o_proj) as transformers builds them:
    the other families put ``attention_bias`` on all four projections (Llama, Qwen3, Gemma 1/2/3, OLMo 2)."""
    if arch == "Qwen2ForCausalLM":
        return {"attention_bias": True, "attention_out_bias": False}
    if arch == QWEN2_MOE:  # (Qwen2MoeConfig's qkv_bias, default true; o_proj never)
        return {"attention_bias": bool(hf.get("qkv_bias", True)), "attention_out_bias": False}
    biased = arch not in _NO_ATTENTION_BIAS and bool(hf.get("attention_bias", False))
    return {"attention_bias": biased, "attention_out_bias": biased}


def _positive_or_none(hf: dict[str, Any], key: str) -> float | None:
    value = hf.get(key)
    if value is None:
        return None
    if not float(value) > 0:
        raise ValueError(f"{key}={value!r} must be > 0 or null")
    return float(value)


def family_fields(hf: dict[str, Any], arch: str) -> dict[str, Any]:
    """Norm style/placement, q/k norm kind, embedding scale, attention scale and soft-capping of ``arch``."""
    gemma = arch in GEMMA_ARCHS
    fields: dict[str, Any] = {
        "hidden_act": activation(hf, arch),
        "norm_offset": 1.0 if gemma else 0.0,  # Gemma norms scale by (1 + w)
        "embed_scale": gemma,  # Gemma multiplies the embeddings by sqrt(hidden_size)
        "norm_placement": {"Gemma2ForCausalLM": "sandwich", "Gemma3ForCausalLM": "sandwich",
                           "Olmo2ForCausalLM": "post"}.get(arch, "pre"),
        "qk_norm": {"Qwen3ForCausalLM": "head", "Qwen3MoeForCausalLM": "head", "Gemma3ForCausalLM": "head",
                    "Olmo2ForCausalLM": "full", OLMOE: "full"}.get(arch),
        "fused_checkpoint": arch in FUSED_ARCHS,
    }
    if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        fields["query_pre_attn_scalar"] = float(hf.get("query_pre_attn_scalar") or 256)
        gemma2 = arch == "Gemma2ForCausalLM"
        fields["final_logit_softcap"] = _positive_or_none(
            {"final_logit_softcapping": hf.get("final_logit_softcapping", 30.0 if gemma2 else None)},
            "final_logit_softcapping")
        # Gemma 3 configs carry attn_logit_softcapping, but its attention never caps (transformers' Gemma 3)
        if gemma2:
            fields["attn_logit_softcap"] = _positive_or_none(
                {"attn_logit_softcapping": hf.get("attn_logit_softcapping", 50.0)}, "attn_logit_softcapping")
    return fields


def layer_types(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[str, ...] | None:
    """"sliding_attention" / "full_attention" per layer for the families that mix them (None otherwise):
    ``layer_types`` when given, else Gemma 2's alternation (even layers local) or Gemma 3's
    ``sliding_window_pattern`` (every pattern-th layer global, default 6)."""
    types = hf.get("layer_types")
    if types:
        return checked_layer_types(types, num_layers)
    if arch == "Gemma2ForCausalLM":
        return tuple("sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers))
    if arch == "Gemma3ForCausalLM":
        pattern = int(hf.get("sliding_window_pattern") or 6)
        return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers))
    return None


def family_sliding_windows(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[int | None, ...] | None:
    """Per-layer windows of the Gemma 2/3, Phi-3 and OLMo 2 families (None: not one of them)."""
    window = hf.get("sliding_window")
    if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        if hf.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention=True (an encoder checkpoint) is not supported")
        types = layer_types(hf, arch, num_layers)
        return tuple(int(window) if window and t == "sliding_attention" else None for t in types)
    if arch in ("Phi3ForCausalLM", "Olmo2ForCausalLM", "GemmaForCausalLM"):
        # transformers' Phi-3 windows every layer when ``sliding_window`` is set (Phi-3-mini-4k: 2047)
        return (int(window) if window and arch == "Phi3ForCausalLM" else None,) * num_layers
    return None


def gemma3_rope_dicts(hf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(global rope dict, local rope dict) of a Gemma 3 config: rope_parameters per layer type (5.x), or
    rope_theta + rope_scaling for global layers and rope_local_base_freq for local ones (4.x)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {})
        local = dict(params.get("sliding_attention") or {})
        full.setdefault("rope_theta", 1_000_000.0)
        local.setdefault("rope_theta", 10_000.0)
        return full, local
    full = {**dict(hf.get("rope_scaling") or {}), **params}
    full.setdefault("rope_theta", hf.get("rope_theta", 1_000_000.0))
    local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq", 10_000.0)}
    return full, local


def moe_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """ModelConfig's MoE fields. Mixtral / OLMoE: every layer sparse, experts of ``intermediate_size``, top-k
    renormalized (OLMoE: when ``norm_topk_prob``). Qwen3-MoE / Qwen2-MoE: layer i is sparse unless listed in
    ``mlp_only_layers`` or (i + 1) is not a multiple of ``decoder_sparse_step``; experts of
    ``moe_intermediate_size``; ``norm_topk_prob`` as configured."""
    if arch not in MOE_ARCHITECTURES:
        return {}
    # (Qwen2MoeConfig has no num_local_experts alias: transformers reads num_experts only)
    num_experts = int((None if arch == QWEN2_MOE else hf.get("num_local_experts")) or hf.get("num_experts") or 0)
    top_k = int(hf.get("num_experts_per_tok") or 0)
    if num_experts < 1 or not 1 <= top_k <= num_experts:
        raise ValueError(f"{arch}: num_experts={num_experts} and num_experts_per_tok={top_k} must satisfy "
                         "1 <= num_experts_per_tok <= num_experts")
    if arch in ("MixtralForCausalLM", OLMOE):  # (OLMoE: norm_topk_prob as configured, default false)
        return {"num_experts": num_experts, "num_experts_per_tok": top_k,
                "norm_topk_prob": arch == "MixtralForCausalLM" or bool(hf.get("norm_topk_prob")),
                "moe_intermediate_size": int(hf["intermediate_size"]), "moe_layers": (True,) * num_layers}
    step = int(hf.get("decoder_sparse_step") or 1)
    dense = {int(i) for i in hf.get("mlp_only_layers") or ()}
    layers = tuple(i not in dense and (i + 1) % step == 0 for i in range(num_layers))
    return {"num_experts": num_experts, "num_experts_per_tok": top_k,
            "norm_topk_prob": bool(hf.get("norm_topk_prob")),
            "moe_intermediate_size": int(hf["moe_intermediate_size"]), "moe_layers": layers}


def sliding_windows_from_hf(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[int | None, ...]:
    """Per-layer sliding windows. Mistral windows every layer; Qwen2/3 use ``layer_types`` when
    ``use_sliding_window`` is set; Llama never windows; the other families: ``family_sliding_windows``."""
    family = family_sliding_windows(hf, arch, num_layers)
    if family is None:
        family = extra_sliding_windows(hf, arch, num_layers)
    if family is None:
        family = dense_sliding_windows(hf, arch, num_layers)
    if family is not None:
        return family
    window = hf.get("sliding_window")  # (HF_DEFAULTS: Mistral's 4096; Qwen2/3(-MoE)'s only with use_sliding_window)
    if arch == "Qwen3MoeForCausalLM" and not hf.get("use_sliding_window"):
        window = None  # (Qwen3MoeConfig drops the window unless use_sliding_window; then every layer has it)
    if arch in ("MistralForCausalLM", "MixtralForCausalLM", "Qwen3MoeForCausalLM", "PhimoeForCausalLM"):
        return (int(window) if window else None,) * num_layers
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and hf.get("use_sliding_window") and window:
        types = hf.get("layer_types")
        if types:
            return tuple(int(window) if t == "sliding_attention" else None for t in types)
        max_window_layers = int(hf.get("max_window_layers", 28))  # (Qwen2Config / Qwen3Config default)
        return tuple(int(window) if i >= max_window_layers else None for i in range(num_layers))
    return (None,) * num_layers
