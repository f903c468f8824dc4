"""GGUF files of DeepSeek-V2 / V3 (llama.cpp's ``deepseek2``): names, the metadata -> HF config, and
``kv_b_proj`` rebuilt from the two halves the converter splits it into.

For MLA with the latent absorbed, convert_hf_to_gguf.py writes ``kv_b_proj`` [H * (nope + v), kv_lora] as
``attn_k_b`` [H, kv_lora, nope] (each head's key half, transposed) and ``attn_v_b`` [H, v, kv_lora]; files from
older converters keep ``attn_kv_b`` whole. The converter writes head_count_kv = 1 (MLA as MQA) and
key_length = kv_lora + rope; the per-head sizes are ``key_length_mla`` / ``value_length_mla`` (older files:
key_length / value_length). Routing: a file with ``exp_probs_b`` (the score-correction bias) is V3's sigmoid
``noaux_tc``; otherwise V2's softmax, group-limited when the file has expert groups. llama.cpp rotates adjacent
pairs (its NORM rope) as HF's interleaved DeepSeek rope does, so q/k rows are written unpermuted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gguf_rope import f32_to_float

DEEPSEEK_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_q_a": "self_attn.q_a_proj", "attn_q_a_norm": "self_attn.q_a_layernorm",
    "attn_q_b": "self_attn.q_b_proj", "attn_kv_a_mqa": "self_attn.kv_a_proj_with_mqa",
    "attn_kv_a_norm": "self_attn.kv_a_layernorm", "attn_kv_b": "self_attn.kv_b_proj",
    "attn_k_b": "self_attn.kv_b_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate", "exp_probs_b.bias": "mlp.gate.e_score_correction_bias",
    "ffn_gate_shexp": "mlp.shared_experts.gate_proj", "ffn_up_shexp": "mlp.shared_experts.up_proj",
    "ffn_down_shexp": "mlp.shared_experts.down_proj",
}
DEEPSEEK_SPLIT = {f"ffn_{p}_exps": (f"mlp.experts.{{i}}.{p}_proj", "expert_count") for p in ("gate", "up", "down")}
_SCORING = {1: "softmax", 2: "sigmoid"}  # llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE


def deepseek_config(ckpt, c: dict[str, Any]) -> dict[str, Any]:
    """config.json fields of a deepseek2 file (see the module docstring)."""
    heads, rope = c["num_attention_heads"], int(ckpt.arch_key("rope.dimension_count"))
    key_mla = ckpt.arch_key("attention.key_length_mla")
    qk_head = int(key_mla if key_mla is not None else ckpt.arch_key("attention.key_length"))
    v_head = int(ckpt.arch_key("attention.value_length_mla", ckpt.arch_key("attention.value_length")))
    v3 = "blk.{}.exp_probs_b.bias".format(int(ckpt.arch_key("leading_dense_block_count", 0))) in ckpt.tensor_keys()
    gating = int(ckpt.arch_key("expert_gating_func", 2 if v3 else 1))
    if gating not in _SCORING:
        raise ValueError(f"GGUF deepseek2.expert_gating_func={gating} is not supported; supported: 1 (softmax), "
                         "2 (sigmoid)")
    groups = int(ckpt.arch_key("expert_group_count", 1))
    q_lora = ckpt.arch_key("attention.q_lora_rank")
    out = {k: v for k, v in c.items() if k != "head_dim"}
    out.update(
        architectures=["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        model_type="deepseek_v3" if v3 else "deepseek_v2", num_key_value_heads=heads,
        intermediate_size=int(ckpt.arch_key("feed_forward_length")),
        moe_intermediate_size=int(ckpt.arch_key("expert_feed_forward_length")),
        n_routed_experts=int(ckpt.arch_key("expert_count", 0)) or None,
        n_shared_experts=int(ckpt.arch_key("expert_shared_count", 0)) or None,
        num_experts_per_tok=int(ckpt.arch_key("expert_used_count", 0)) or None,
        first_k_dense_replace=int(ckpt.arch_key("leading_dense_block_count", 0)), moe_layer_freq=1,
        routed_scaling_factor=f32_to_float(ckpt.arch_key("expert_weights_scale", 1.0)),
        norm_topk_prob=bool(ckpt.arch_key("expert_weights_norm", False)), scoring_func=_SCORING[gating],
        topk_method="noaux_tc" if v3 else ("group_limited_greedy" if groups > 1 else "greedy"),
        n_group=groups, topk_group=int(ckpt.arch_key("expert_group_used_count", 1)),
        kv_lora_rank=int(ckpt.arch_key("attention.kv_lora_rank")),
        q_lora_rank=None if q_lora is None else int(q_lora), qk_rope_head_dim=rope, qk_nope_head_dim=qk_head - rope,
        v_head_dim=v_head, rope_interleave=True)
    kind = ckpt.arch_key("rope.scaling.type")
    if kind == "yarn":  # the converter stores 0.1 * mscale_all_dim as the log multiplier
        mscale = f32_to_float(10 * float(ckpt.arch_key("rope.scaling.yarn_log_multiplier", 0.0)))
        out["rope_scaling"] = {"rope_type": "yarn", "factor": f32_to_float(ckpt.arch_key("rope.scaling.factor")),
                               "original_max_position_embeddings":
                                   int(ckpt.arch_key("rope.scaling.original_context_length")),
                               "mscale": mscale, "mscale_all_dim": mscale}
        for key in ("beta_fast", "beta_slow"):
            if ckpt.arch_key(f"rope.scaling.yarn_{key}") is not None:
                out["rope_scaling"][key] = f32_to_float(ckpt.arch_key(f"rope.scaling.yarn_{key}"))
    elif kind not in (None, "none"):
        raise ValueError(f"GGUF deepseek2 rope scaling type {kind!r} is not supported; supported: none, yarn")
    return out


def kv_b_proj(ckpt, name: str, w: np.ndarray) -> np.ndarray:
    """``attn_k_b`` ``name`` ([H, kv_lora, nope]) and its layer's ``attn_v_b`` [H, v, kv_lora] -> ``kv_b_proj``
    [H * (nope + v), kv_lora] (the rows of each head: its key half, then its value half)."""
    v_b = ckpt.tensor_array(name.replace("attn_k_b", "attn_v_b"))
    kv_b = np.concatenate([w.swapaxes(1, 2), v_b], axis=1)
    return np.ascontiguousarray(kv_b.reshape(-1, kv_b.shape[-1]))
