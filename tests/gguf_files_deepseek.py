"""A tiny DeepSeek-V2 / V3 HF checkpoint written as llama.cpp's convert_hf_to_gguf.py writes it (``deepseek2``):
MLA as MQA (head_count_kv 1), kv_b_proj split into attn_k_b (transposed per head) and attn_v_b, experts stacked,
the correction bias as exp_probs_b, and DeepseekV2Model's metadata keys."""

from __future__ import annotations

import os

import gguf
import numpy as np
from gguf_files import _checkpoint_tensors, _stack_experts, finish_gguf


def _metadata(w: gguf.GGUFWriter, cfg) -> None:
    rope = cfg.rope_parameters
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_expert_count(cfg.n_routed_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_group_count(cfg.n_group)
    w.add_expert_group_used_count(cfg.topk_group)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if getattr(cfg, "scoring_func", "sigmoid" if cfg.model_type == "deepseek_v3" else "softmax") == "sigmoid"
                             else gguf.ExpertGatingFuncType.SOFTMAX)
    w.add_leading_dense_block_count(cfg.first_k_dense_replace)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.q_lora_rank is not None:
        w.add_q_lora_rank(cfg.q_lora_rank)
    w.add_kv_lora_rank(cfg.kv_lora_rank)
    w.add_key_length(cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    w.add_value_length(cfg.kv_lora_rank)
    w.add_key_length_mla(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
    w.add_value_length_mla(cfg.v_head_dim)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_expert_shared_count(cfg.n_shared_experts or 0)
    w.add_expert_weights_scale(getattr(cfg, "routed_scaling_factor", 1.0))
    if getattr(cfg, "norm_topk_prob", False):
        w.add_expert_weights_norm(True)
    w.add_rope_dimension_count(cfg.qk_rope_head_dim)
    if rope.get("rope_type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_rope_scaling_yarn_log_mul(0.1 * rope["mscale_all_dim"])
        for key, add in (("beta_fast", w.add_rope_scaling_yarn_beta_fast), ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(rope[key])


def write_deepseek_as_gguf(path, hf_dir, cfg, split_kv_b: bool = True) -> None:
    """``split_kv_b=False``: kv_b_proj kept whole (attn_kv_b), as older converters wrote it."""
    w = gguf.GGUFWriter(os.fspath(path), "deepseek2")
    _metadata(w, cfg)
    tensors, _ = _stack_experts(_checkpoint_tensors(hf_dir), {})
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.DEEPSEEK2, cfg.num_hidden_layers)
    heads, nope = cfg.num_attention_heads, cfg.qk_nope_head_dim
    for name, arr in tensors.items():
        arr = arr.astype(np.float32)
        if split_kv_b and name.endswith("kv_b_proj.weight"):
            kv_b = arr.reshape(heads, nope + cfg.v_head_dim, arr.shape[-1])
            k_b, v_b = kv_b[:, :nope], kv_b[:, nope:]
            w.add_tensor(names.get_name(name.replace("kv_b_proj", "k_b_proj"), try_suffixes=(".weight",)),
                         np.ascontiguousarray(k_b.swapaxes(1, 2)))
            w.add_tensor(names.get_name(name.replace("kv_b_proj", "v_b_proj"), try_suffixes=(".weight",)),
                         np.ascontiguousarray(v_b))
            continue
        name = name.replace("e_score_correction_bias", "e_score_correction.bias")  # as the converter renames it
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(arr))
    finish_gguf(w)
