"""GGUF metadata -> HF config fields for Gemma 1/2/3, Phi-3, OLMo 2, Granite, Starcoder2, Command-R and MoE files
(llama.cpp's keys).

Each function takes the ``GGUFCheckpoint`` and the config built so far (sizes, rope_theta, eps, ...) and returns
the fields to add. Values llama.cpp does not store but hard-codes per model are rebuilt its way:

- Gemma 2/3's attention scale: query_pre_attn_scalar = hidden / heads for the 27B models (46 / 62 layers),
  else head_dim (llama.cpp picks 1/sqrt of either by model size, as the HF configs do).
- Gemma 3's local layers: rope base ``rope.freq_base_swa`` (10000 in older files), every 6th layer global
  (unless the file has ``attention.sliding_window_pattern``, one bool per layer: true = sliding).
- Phi-3 longrope: ``rope_factors_long`` / ``rope_factors_short`` tensors hold the factor lists.
"""

from __future__ import annotations

from typing import Any

from .gguf_rope import f32_to_float, rope_scaling_field

_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def _query_pre_attn_scalar(arch: str, cfg: dict[str, Any]) -> float:
    if cfg["num_hidden_layers"] == _GEMMA_27B_LAYERS[arch]:
        return cfg["hidden_size"] / cfg["num_attention_heads"]
    return float(cfg["head_dim"])


def _float_or_none(value) -> float | None:
    return None if value is None else f32_to_float(value)


def gemma(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh"}


def gemma2(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": _query_pre_attn_scalar("gemma2", cfg),
            "sliding_window": ckpt.arch_key("attention.sliding_window"),
            "attn_logit_softcapping": _float_or_none(ckpt.arch_key("attn_logit_softcapping")),
            "final_logit_softcapping": _float_or_none(ckpt.arch_key("final_logit_softcapping"))}


def gemma3(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": _query_pre_attn_scalar("gemma3", cfg),
        "sliding_window": ckpt.arch_key("attention.sliding_window"),
        "rope_local_base_freq": _float_or_none(ckpt.arch_key("rope.freq_base_swa", 10000.0)),
        "final_logit_softcapping": _float_or_none(ckpt.arch_key("final_logit_softcapping"))}
    pattern = ckpt.arch_key("attention.sliding_window_pattern")
    if isinstance(pattern, (list, tuple)):
        fields["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
    elif pattern is not None:
        fields["sliding_window_pattern"] = int(pattern)
    kind = ckpt.arch_key("rope.scaling.type")
    if kind == "linear":
        fields["rope_scaling"] = {"rope_type": "linear", "factor": float(ckpt.arch_key("rope.scaling.factor"))}
    elif kind not in (None, "none"):
        raise ValueError(f"GGUF gemma3 rope scaling type {kind!r} is not supported; supported: none, linear")
    return fields


def phi3(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """Partial rotary (Phi-4-mini: rope.dimension_count < head_dim), a sliding window, longrope factors."""
    fields: dict[str, Any] = {"sliding_window": ckpt.arch_key("attention.sliding_window")}
    rope_dim = ckpt.arch_key("rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != cfg["head_dim"]:
        fields["partial_rotary_factor"] = int(rope_dim) / cfg["head_dim"]
    names = ("rope_factors_long.weight", "rope_factors_short.weight")
    present = [n in ckpt.tensor_keys() for n in names]
    if any(present) and not all(present):
        raise ValueError(f"GGUF {ckpt.path!r} has only one of {names}: longrope needs both")
    if all(present):
        original = ckpt.arch_key("rope.scaling.original_context_length")
        if original is None:
            raise ValueError(f"GGUF {ckpt.path!r} has longrope factors but no "
                             "phi3.rope.scaling.original_context_length")
        scaling = {"rope_type": "longrope", "long_factor": ckpt.tensor_array(names[0]).tolist(),
                   "short_factor": ckpt.tensor_array(names[1]).tolist(),
                   "original_max_position_embeddings": int(original)}
        attn_factor = ckpt.arch_key("rope.scaling.attn_factor")
        if attn_factor is not None:
            scaling["attention_factor"] = _float_or_none(attn_factor)
        fields["rope_scaling"] = scaling
        fields["original_max_position_embeddings"] = int(original)
    return fields


def olmo2(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """OLMo 3 converts to llama.cpp's olmo2 with a sliding window and one bool per layer (true = sliding): such a
    file is Olmo3ForCausalLM, its rope scaling (on the full-attention layers) read as llama's."""
    window = ckpt.arch_key("attention.sliding_window")
    if window is None:
        return {}
    pattern = ckpt.arch_key("attention.sliding_window_pattern")
    if not isinstance(pattern, (list, tuple)) or len(pattern) != cfg["num_hidden_layers"]:
        raise ValueError(f"GGUF olmo2 file {ckpt.path!r} has a sliding window but no per-layer "
                         "olmo2.attention.sliding_window_pattern")
    fields = {"architectures": ["Olmo3ForCausalLM"], "model_type": "olmo3", "sliding_window": int(window),
              "layer_types": ["sliding_attention" if p else "full_attention" for p in pattern]}
    return {**fields, **rope_scaling_field(ckpt, cfg)}


def granite(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """Granite's four multipliers (the converter renames them *_scale) and llama's rope scaling."""
    fields = {"embedding_multiplier": _float_or_none(ckpt.arch_key("embedding_scale", 1.0)),
              "residual_multiplier": _float_or_none(ckpt.arch_key("residual_scale", 1.0)),
              "attention_multiplier": _float_or_none(ckpt.arch_key("attention.scale")),
              "logits_scaling": _float_or_none(ckpt.arch_key("logit_scale", 1.0))}
    return {**fields, **rope_scaling_field(ckpt, cfg)}


def starcoder2(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """LayerNorm epsilon, biases on every linear layer (``use_bias``), gelu-tanh MLP. llama.cpp keeps no sliding
    window (pass ``hf_config_path`` for the base model's)."""
    fields = {"hidden_act": "gelu_pytorch_tanh", "use_bias": "blk.0.attn_q.bias" in ckpt.tensor_keys(),
              "norm_epsilon": _float_or_none(ckpt.arch_key("attention.layer_norm_epsilon", 1e-5))}
    return {**fields, **rope_scaling_field(ckpt, cfg)}


def command_r(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """Cohere: LayerNorm epsilon, ``logit_scale``, per-head q/k norms when the file has them (Command-R+). The
    converter writes no rope scaling and leaves q/k rows as they are (Cohere's rope is interleaved already)."""
    return {"layer_norm_eps": _float_or_none(ckpt.arch_key("attention.layer_norm_epsilon", 1e-5)),
            "logit_scale": _float_or_none(ckpt.arch_key("logit_scale", 0.0625)),
            "use_qk_norm": "blk.0.attn_q_norm.weight" in ckpt.tensor_keys()}


FAMILY_CONFIG = {"gemma": gemma, "gemma2": gemma2, "gemma3": gemma3, "phi3": phi3, "olmo2": olmo2,
                 "granite": granite, "starcoder2": starcoder2, "command-r": command_r}


def moe_config(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """Experts of a MoE file (``{arch}.expert_count`` > 0): a "llama" file is Mixtral (llama.cpp converts Mixtral
    to its llama architecture; the experts' ffn size is feed_forward_length); qwen3moe / qwen2moe experts have
    expert_feed_forward_length, a layer without a router (``ffn_gate_inp``) is dense (``mlp_only_layers``), and
    the top-k weights are renormalized as llama.cpp's graphs do unless ``expert_weights_norm`` says otherwise
    (qwen3moe always, as every released Qwen3-MoE config; qwen2moe and olmoe never; olmoe's experts have
    feed_forward_length). Qwen2-MoE adds a shared expert of expert_shared_feed_forward_length. Routing is softmax
    top-k in all."""
    arch, layers = ckpt.architecture, cfg["num_hidden_layers"]
    gating = ckpt.arch_key("expert_gating_func")
    if gating not in (None, 1):  # llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX
        raise ValueError(f"GGUF {arch}.expert_gating_func={gating} is not supported; supported: 1 (softmax)")
    top_k = int(ckpt.arch_key("expert_used_count") or 0)
    if arch == "llama":
        ffn = ckpt.arch_key("expert_feed_forward_length", ckpt.arch_key("feed_forward_length"))
        return {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts":
                ckpt.num_experts, "num_experts_per_tok": top_k, "intermediate_size": int(ffn)}
    norm, ffn = ckpt.arch_key("expert_weights_norm"), ckpt.arch_key("expert_feed_forward_length")
    if arch == "olmoe":  # experts of feed_forward_length, top-k weights as llama.cpp's graph: not renormalized
        return {"model_type": "olmoe", "num_experts": ckpt.num_experts, "num_experts_per_tok": top_k,
                "norm_topk_prob": bool(norm), "attention_bias": "blk.0.attn_q.bias" in ckpt.tensor_keys()}
    if ffn is None:
        raise ValueError(f"GGUF {ckpt.path!r} has experts but no {arch}.expert_feed_forward_length")
    fields = {"num_experts": ckpt.num_experts, "num_experts_per_tok": top_k, "moe_intermediate_size": int(ffn),
              "norm_topk_prob": (arch == "qwen3moe") if norm is None else bool(norm), "decoder_sparse_step": 1,
              "mlp_only_layers": [i for i in range(layers)
                                  if f"blk.{i}.ffn_gate_inp.weight" not in ckpt.tensor_keys()]}
    if arch == "qwen3moe":
        return {**fields, "model_type": "qwen3_moe"}
    shared = ckpt.arch_key("expert_shared_feed_forward_length")  # qwen2moe: a shared expert behind a sigmoid gate
    return {**fields, "model_type": "qwen2_moe", "shared_expert_intermediate_size": int(shared or 0),
            "qkv_bias": "blk.0.attn_q.bias" in ckpt.tensor_keys()}
