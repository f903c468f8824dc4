"""DeepSeek-V2 / V3 checkpoint keys -> our parameters (jaxllm.models.deepseek), with the HF shape of each.

Attention (per layer, under ``self_attn.``): ``q_a_proj`` [Rq, D], ``q_a_layernorm`` [Rq], ``q_b_proj``
[H * (Dn + Dr), Rq] (or ``q_proj`` [H * (Dn + Dr), D] when q_lora_rank is null), ``kv_a_proj_with_mqa``
[Rkv + Dr, D], ``kv_a_layernorm`` [Rkv], ``kv_b_proj`` [H * (Dn + Dv), Rkv], ``o_proj`` [D, H * Dv]. Sparse layers
(under ``mlp.``): the router ``gate.weight`` [E, D], V3's ``gate.e_score_correction_bias`` [E], ``experts.{j}.``
gate/up/down and the ungated ``shared_experts.`` gate/up/down; dense layers: ``mlp.`` gate/up/down.

DeepSeek-V3 checkpoints carry ``num_nextn_predict_layers`` multi-token-prediction layers after the last decoder
layer (``model.layers.{num_hidden_layers}...``). They serve speculative decoding only; like vLLM's DeepSeek model
we do not load them, and only those layers' keys are skipped (any other unknown key is an error).
"""

from __future__ import annotations

from jaxllm.config import ModelConfig
from jaxllm.weights.mappings import (
    LinearLayer,
    Target,
    _linear,
    _linear_in_split,
    _linear_targets,
    _same,
    expert_targets,
)


def is_mtp_key(cfg: ModelConfig, name: str) -> bool:
    """Whether ``name`` belongs to one of the checkpoint's MTP layers (indices num_layers, num_layers + 1, ...)."""
    return any(name.startswith(f"model.layers.{cfg.num_layers + j}.") for j in range(cfg.num_nextn_predict_layers))


def _attention_targets(cfg: ModelConfig, i: int) -> dict[str, Target]:
    """The MLA keys of layer ``i``: its linear layers (quantized at load like any, kv_b aside) and the norms."""
    d, h, qk = cfg.hidden_size, cfg.num_heads, cfg.qk_nope_head_dim + cfg.rotary_dim
    rkv, dr, dn, dv = cfg.kv_lora_rank, cfg.rotary_dim, cfg.qk_nope_head_dim, cfg.v_head_dim
    p, attn = f"model.layers.{i}.self_attn.", ("layers", i, "self_attn")
    rq = cfg.q_lora_rank
    lin = lambda name, n, k, out_dims, fn: LinearLayer(p + name, (*attn, name), n, k, out_dims, fn)
    layers = [lin("q_a_proj", rq, d, (rq,), _linear(rq)), lin("q_b_proj", h * qk, rq, (h, qk), _linear(h, qk))]
    if not rq:
        layers = [lin("q_proj", h * qk, d, (h, qk), _linear(h, qk))]
    layers += [lin("kv_a_proj_with_mqa", rkv + dr, d, (rkv + dr,), _linear(rkv + dr)),
               lin("o_proj", d, h * dv, (d,), _linear_in_split(h, dv))]
    m = {k: v for layer in layers for k, v in _linear_targets(cfg, layer).items()}
    if rq:
        m[p + "q_a_layernorm.weight"] = Target((*attn, "q_a_layernorm", "weight"), (rq,), _same)
    m[p + "kv_a_layernorm.weight"] = Target((*attn, "kv_a_layernorm", "weight"), (rkv,), _same)
    m[p + "kv_b_proj.weight"] = Target((*attn, "kv_b_proj"), (h * (dn + dv), rkv), _linear(h, dn + dv))
    return m


def _gated_mlp_targets(cfg: ModelConfig, hf_prefix: str, path: tuple, f: int) -> dict[str, Target]:
    """gate_proj / up_proj [F, D] -> gate_up [D, 2, F]; down_proj [D, F] -> down [F, D]."""
    d = cfg.hidden_size
    layers = [LinearLayer(hf_prefix + "gate_proj", (*path, "gate_up"), f, d, (f,), _linear(f), part=0),
              LinearLayer(hf_prefix + "up_proj", (*path, "gate_up"), f, d, (f,), _linear(f), part=1),
              LinearLayer(hf_prefix + "down_proj", (*path, "down"), d, f, (d,), _linear(d))]
    return {k: v for lin in layers for k, v in _linear_targets(cfg, lin).items()}


def deepseek_family_map(cfg: ModelConfig) -> dict[str, Target]:
    """Every key of a DeepSeek-V2 / V3 checkpoint (MTP layers aside: ``is_mtp_key``)."""
    d, v = cfg.hidden_size, cfg.vocab_size
    m = {"model.embed_tokens.weight": Target(("embed",), (v, d), _same),
         "model.norm.weight": Target(("norm", "weight"), (d,), _same)}
    if not cfg.tie_word_embeddings:
        m["lm_head.weight"] = Target(("lm_head",), (v, d), _same)
    for i in range(cfg.num_layers):
        p, mlp = f"model.layers.{i}.", ("layers", i, "mlp")
        for name in ("input_layernorm", "post_attention_layernorm"):
            m[p + name + ".weight"] = Target(("layers", i, name, "weight"), (d,), _same)
        m.update(_attention_targets(cfg, i))
        if not cfg.is_moe_layer(i):
            m.update(_gated_mlp_targets(cfg, p + "mlp.", mlp, cfg.intermediate_size))
            continue
        m.update(expert_targets(cfg, i))  # router gate.weight and the routed experts
        if cfg.moe_topk_method == "noaux_tc":
            m[p + "mlp.gate.e_score_correction_bias"] = Target((*mlp, "e_score_correction_bias"),
                                                               (cfg.num_experts,), _same)
        if cfg.shared_expert_intermediate_size:
            m.update(_gated_mlp_targets(cfg, p + "mlp.shared_experts.", (*mlp, "shared_experts"),
                                        cfg.shared_expert_intermediate_size))
    return m
