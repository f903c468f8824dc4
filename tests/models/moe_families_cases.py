"""Tiny random checkpoints of GraniteMoe, GraniteMoeShared, PhiMoE, DBRX and Ernie 4.5 MoE for the MoE family
tests: every router, norm and bias (and Ernie's correction bias) perturbed, so routing is not uniform and a wrongly
mapped norm or bias cannot hide behind ones / zeros."""

from __future__ import annotations

import os

import torch
import transformers

_DIMS = {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512}
_GRANITE = dict(_DIMS, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, embedding_multiplier=1.5,
                residual_multiplier=0.7, attention_multiplier=0.2, logits_scaling=2.5)
_LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0 + 0.1 * i for i in range(8)],
             "long_factor": [2.0 + 0.1 * i for i in range(8)], "short_mscale": 1.2, "long_mscale": 1.5,
             "original_max_position_embeddings": 256}
_DBRX = {"d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 512, "vocab_size": 256,
         "attn_config": {"kv_n_heads": 2, "clip_qkv": 0.4, "rope_theta": 10000.0},
         "ffn_config": {"ffn_hidden_size": 32, "moe_num_experts": 8, "moe_top_k": 2}}

# name -> (architecture, config class, config keywords)
CASES = {
    "granitemoe": ("GraniteMoeForCausalLM", "GraniteMoeConfig", _GRANITE),
    "granitemoeshared": ("GraniteMoeSharedForCausalLM", "GraniteMoeSharedConfig",
                         dict(_GRANITE, shared_intermediate_size=48, num_experts_per_tok=3)),
    "phimoe": ("PhimoeForCausalLM", "PhimoeConfig",
               dict(_DIMS, intermediate_size=32, num_local_experts=8, attention_bias=True, lm_head_bias=True,
                    rope_parameters=_LONGROPE, router_jitter_noise=0.3, sliding_window=7)),
    "dbrx": ("DbrxForCausalLM", "DbrxConfig", _DBRX),
    "dbrx-p2": ("DbrxForCausalLM", "DbrxConfig",
                dict(_DBRX, ffn_config={**_DBRX["ffn_config"], "moe_top_k": 3, "moe_normalize_expert_weights": 2.0})),
    # layer 0 dense (moe_layer_start_index 1), layers 1 and 3 sparse (interval 2), two shared experts
    "ernie-moe": ("Ernie4_5_MoeForCausalLM", "Ernie4_5_MoeConfig",
                  dict(_DIMS, num_hidden_layers=4, intermediate_size=96, moe_intermediate_size=16, moe_k=2,
                       moe_num_experts=8, moe_num_shared_experts=2, moe_layer_start_index=1, moe_layer_interval=2,
                       tie_word_embeddings=False)),
}

_ROUTERS = ("router.weight", "router.layer.weight", "mlp.gate.weight")


def save_moe_model(path, name: str, seed: int = 0, **overrides):
    """Build CASES[name]'s random model (``overrides`` on its config), save it to ``path``; the fp32 eval model."""
    arch, cfg_class, kw = CASES[name]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_class)(**{**kw, **overrides})
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg).float().eval()
    norms = {f"{m}.weight" for m, mod in model.named_modules() if "Norm" in type(mod).__name__}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname in norms:  # (not by name: DBRX's attention lives in "norm_attn_norm")
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith(("bias", "e_score_correction_bias")):
                p.copy_(0.1 * torch.randn_like(p))
            elif pname.endswith(_ROUTERS):  # well-separated, non-uniform routing
                p.copy_(torch.randn_like(p))
    model.save_pretrained(os.fspath(path))
    return model
