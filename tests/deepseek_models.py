"""Tiny random DeepSeek-V2 / V3 checkpoints built with transformers (no downloads), every norm, the routers and
V3's score-correction bias perturbed so that a wrongly mapped one cannot hide behind ones / zeros."""

from __future__ import annotations

import torch
import transformers

TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 32,
        "num_hidden_layers": 3, "num_attention_heads": 4, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "n_shared_experts": 1, "first_k_dense_replace": 1, "kv_lora_rank": 32, "q_lora_rank": 24,
        "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_group": 4, "topk_group": 2,
        "max_position_embeddings": 512}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128, "mscale": 1.0,
        "mscale_all_dim": 0.8, "rope_theta": 10000.0}
V2, V3 = "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"


def save_deepseek(path, arch: str, seed: int = 0, **overrides):
    """A random transformers DeepSeek model with every norm, the routers and V3's correction bias perturbed,
    saved to ``path``; returns it (fp32, eval)."""
    torch.manual_seed(seed)
    cfg = getattr(transformers, arch.replace("ForCausalLM", "Config"))(**{**TINY, **overrides})
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):  # well-separated, non-uniform routing
                p.copy_(torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn_like(b))
    model.save_pretrained(str(path))
    return model
