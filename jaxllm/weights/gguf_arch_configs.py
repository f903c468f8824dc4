"""GGUF metadata -> HF config.json fields of the families in gguf_archs.py (llama.cpp's keys; what a converter
does not store is rebuilt as llama.cpp assumes it: Falcon's parallel block, Cohere2's 3:1 sliding layers)."""

from __future__ import annotations

from typing import Any

from .gguf_rope import f32_to_float, rope_scaling_field


def rope_fields(ckpt, head_dim: int) -> dict[str, Any]:
    """partial_rotary_factor from rope.dimension_count, rope_theta (10000 when the converter wrote none)."""
    rope_dim = int(ckpt.arch_key("rope.dimension_count", head_dim))
    return {"partial_rotary_factor": rope_dim / head_dim,
            "rope_theta": f32_to_float(ckpt.arch_key("rope.freq_base", 10000.0))}


def ln_eps(ckpt) -> float:
    return f32_to_float(ckpt.arch_key("attention.layer_norm_epsilon", 1e-5))


def has(ckpt, name: str) -> bool:
    return name in ckpt.tensor_keys()


def gpt2(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "gpt2", "n_embd": c["hidden_size"], "n_layer": c["num_hidden_layers"],
            "n_head": c["num_attention_heads"], "n_positions": c["max_position_embeddings"],
            "n_inner": c["intermediate_size"], "layer_norm_epsilon": ln_eps(ckpt), "activation_function": "gelu_new"}


def phi2(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "phi", "hidden_act": "gelu_new", "layer_norm_eps": ln_eps(ckpt),
            **rope_fields(ckpt, c["head_dim"])}


def stablelm(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "stablelm", "hidden_act": "silu", "layer_norm_eps": ln_eps(ckpt),
            "use_qkv_bias": has(ckpt, "blk.0.attn_q.bias"), "qk_layernorm": has(ckpt, "blk.0.attn_q_norm.weight"),
            "use_parallel_residual": bool(ckpt.arch_key("use_parallel_residual", True)),
            **rope_fields(ckpt, c["head_dim"])}


def gptneox(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    rope = rope_fields(ckpt, c["head_dim"])
    return {**c, "model_type": "gpt_neox", "hidden_act": "gelu", "layer_norm_eps": ln_eps(ckpt),
            "rotary_pct": rope["partial_rotary_factor"], "rotary_emb_base": rope["rope_theta"], **rope,
            "use_parallel_residual": bool(ckpt.arch_key("use_parallel_residual", True)), "attention_bias": True}


def olmo(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    clip = ckpt.arch_key("attention.clamp_kqv")
    return {**c, "model_type": "olmo", "attention_bias": has(ckpt, "blk.0.attn_q.bias"),
            "clip_qkv": None if clip is None else f32_to_float(clip), **rope_scaling_field(ckpt, c)}


def seed_oss(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "seed_oss", "attention_bias": has(ckpt, "blk.0.attn_q.bias"),
            "attention_out_bias": has(ckpt, "blk.0.attn_output.bias"), "mlp_bias": has(ckpt, "blk.0.ffn_up.bias"),
            **rope_scaling_field(ckpt, c)}


def nemotron(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    fields = {**c, "model_type": "nemotron", "hidden_act": "relu2", "norm_eps": ln_eps(ckpt),
              "attention_bias": has(ckpt, "blk.0.attn_q.bias"), "mlp_bias": has(ckpt, "blk.0.ffn_up.bias"),
              **rope_fields(ckpt, c["head_dim"])}
    return {**fields, **rope_scaling_field(ckpt, fields)}


def glm4(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "glm4", "attention_bias": has(ckpt, "blk.0.attn_q.bias"),
            **rope_fields(ckpt, c["head_dim"])}


def ernie4_5(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "ernie4_5", "use_bias": has(ckpt, "blk.0.attn_q.bias"), **rope_scaling_field(ckpt, c)}


def layer_types(ckpt, c: dict[str, Any], every: int | None = None) -> dict[str, Any]:
    """sliding_window and layer_types from ``attention.sliding_window_pattern`` (one bool per layer, true =
    sliding; absent: every ``every``-th layer global, as llama.cpp assumes for the family)."""
    window = ckpt.arch_key("attention.sliding_window")
    if window is None:
        return {"sliding_window": None}
    pattern = ckpt.arch_key("attention.sliding_window_pattern")
    if not isinstance(pattern, (list, tuple)):
        if every is None:
            return {"sliding_window": int(window)}
        pattern = [(i + 1) % every != 0 for i in range(c["num_hidden_layers"])]
    return {"sliding_window": int(window),
            "layer_types": ["sliding_attention" if p else "full_attention" for p in pattern]}


def exaone4(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "model_type": "exaone4", **layer_types(ckpt, c), **rope_scaling_field(ckpt, c)}


def cohere2(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """Cohere's parallel block; llama.cpp hard-codes 3 sliding layers to 1 global (the file stores the window)."""
    if int(ckpt.arch_key("rope.dimension_count", c["head_dim"])) != c["head_dim"]:
        raise ValueError(f"GGUF cohere2 rope.dimension_count={ckpt.arch_key('rope.dimension_count')} differs from "
                         f"head_dim={c['head_dim']}: partial rotary is not supported for Cohere2")
    return {**c, "model_type": "cohere2", "layer_norm_eps": ln_eps(ckpt), "use_qk_norm": False,
            "logit_scale": f32_to_float(ckpt.arch_key("logit_scale", 0.0625)), **layer_types(ckpt, c, every=4)}


def granitemoe(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """Granite's multipliers; experts of feed_forward_length; a shared expert makes it GraniteMoeShared."""
    from .gguf_families import granite

    shared = ckpt.arch_key("expert_shared_feed_forward_length")
    fields = {**c, **granite(ckpt, c), "model_type": "granitemoe", "num_local_experts": int(ckpt.arch_key("expert_count")),
              "num_experts_per_tok": int(ckpt.arch_key("expert_used_count"))}
    if shared:
        fields.update(architectures=["GraniteMoeSharedForCausalLM"], model_type="granitemoeshared",
                      shared_intermediate_size=int(shared))
    return fields


def falcon(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp runs every Falcon file as a parallel block; two norms (``attn_norm_2``) or grouped kv heads mean
    the new decoder architecture, one kv head multi-query, else one kv head per head."""
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    two_norms = has(ckpt, "blk.0.attn_norm_2.weight")
    new = two_norms or 1 < kv < heads
    return {**c, "model_type": "falcon", "layer_norm_epsilon": ln_eps(ckpt), "hidden_act": "gelu",
            "new_decoder_architecture": new, "num_kv_heads": kv, "multi_query": not new and kv == 1,
            "num_ln_in_parallel_attn": 2 if two_norms else (1 if new else None), "parallel_attn": True,
            "bias": has(ckpt, "blk.0.attn_qkv.bias"), "alibi": False,
            "ffn_hidden_size": c["intermediate_size"]}


def ernie4_5_moe(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """Ernie 4.5 MoE: sparse layers from moe_layer_start_index every moe_layer_interval up to the last layer with
    a router; the shared experts' count (their size is the file's tensors'); dense layers of feed_forward_length."""
    layers = [i for i in range(c["num_hidden_layers"]) if has(ckpt, f"blk.{i}.ffn_gate_inp.weight")]
    if not layers:
        raise ValueError(f"GGUF ernie4_5-moe file {ckpt.path!r} has no expert router (blk.N.ffn_gate_inp.weight)")
    return {**ernie4_5(ckpt, c), "model_type": "ernie4_5_moe", "moe_num_experts": int(ckpt.arch_key("expert_count")),
            "moe_k": int(ckpt.arch_key("expert_used_count")),
            "moe_intermediate_size": int(ckpt.arch_key("expert_feed_forward_length")),
            "moe_num_shared_experts": int(ckpt.arch_key("expert_shared_count", 0)),
            "moe_layer_start_index": int(ckpt.arch_key("leading_dense_block_count", layers[0])),
            "moe_layer_interval": int(ckpt.arch_key("interleave_moe_layer_step", 1)),
            "moe_layer_end_index": layers[-1]}


def dbrx(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """DBRX's nested config; llama.cpp renormalizes the top-k weights (moe_normalize_expert_weights 1, as every
    released DBRX config)."""
    clip = ckpt.arch_key("attention.clamp_kqv")
    return {"architectures": c["architectures"], "model_type": "dbrx", "vocab_size": c["vocab_size"],
            "d_model": c["hidden_size"], "n_heads": c["num_attention_heads"], "n_layers": c["num_hidden_layers"],
            "max_seq_len": c["max_position_embeddings"], "tie_word_embeddings": c["tie_word_embeddings"],
            "bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"], "torch_dtype": "float32",
            "attn_config": {"kv_n_heads": c["num_key_value_heads"], "rope_theta": c["rope_theta"],
                            "clip_qkv": None if clip is None else f32_to_float(clip)},
            "ffn_config": {"ffn_hidden_size": c["intermediate_size"],
                           "moe_num_experts": int(ckpt.arch_key("expert_count")),
                           "moe_top_k": int(ckpt.arch_key("expert_used_count")), "moe_normalize_expert_weights": 1.0}}


def phimoe(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """Phi-3.5-MoE: Phi-3's metadata (gguf_families.phi3) plus experts. The converter stores one longrope
    attention factor, sqrt(1 + ln(scale) / ln(original context)), in place of the config's short / long mscale:
    both are set to it, as llama.cpp applies it. Sparsemixer's jitter threshold is not stored: transformers'
    default."""
    from .gguf_families import phi3

    fields = phi3(ckpt, c)
    if not fields.get("sliding_window"):  # (0: none)
        fields["sliding_window"] = None
    scaling = fields.get("rope_scaling")
    if scaling is not None and "attention_factor" in scaling:
        factor = scaling.pop("attention_factor")
        scaling.update(short_mscale=factor, long_mscale=factor)
    return {**c, **fields, "model_type": "phimoe", "num_local_experts": int(ckpt.arch_key("expert_count")),
            "num_experts_per_tok": int(ckpt.arch_key("expert_used_count")),
            "attention_bias": has(ckpt, "blk.0.attn_q.bias"), "lm_head_bias": has(ckpt, "output.bias")}
