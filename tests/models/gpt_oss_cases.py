"""Tiny random gpt-oss checkpoints for tests/models/test_gpt_oss*.py: sinks, router (weight and bias), attention and
expert biases and norms perturbed, expert weights large enough that the clamped SwiGLU's limits bite, alternating
sliding (window 8) / full layers and a yarn rope whose scaling matters at these lengths."""

from __future__ import annotations

import os

import torch
import transformers

WINDOW = 8
GPT_OSS_TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 4,
                "num_experts_per_tok": 2, "sliding_window": WINDOW, "max_position_embeddings": 256,
                "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0,
                                    "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 64}}


def save_gpt_oss(path, seed: int = 0, **overrides):
    """Build, perturb and save (safetensors, fp32) a tiny GptOssForCausalLM; returns the fp32 eval model."""
    torch.manual_seed(seed)
    cfg = transformers.GptOssConfig(**{**GPT_OSS_TINY, **overrides})
    cfg.architectures = ["GptOssForCausalLM"]
    model = transformers.GptOssForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(("sinks", "router.weight")):
                p.copy_(torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            elif name.endswith("experts.gate_up_proj"):  # |gate|, |up| often beyond swiglu_limit
                p.copy_(0.6 * torch.randn_like(p))
            elif name.endswith("experts.down_proj"):
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(os.fspath(path))
    return model
