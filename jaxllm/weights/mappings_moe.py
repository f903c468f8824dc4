"""Checkpoint keys of the MoE families whose experts are stored fused (GraniteMoe(Shared): ``input_linear``
[E, 2F, D] with the gate rows first and ``output_linear`` [E, D, F]; DBRX: ``w1`` / ``v1`` / ``w2`` [E * F, D])
and of DBRX's own naming (``transformer.blocks.N.norm_attn_norm``, fused ``Wqkv``). Each fused tensor is split at
load into the stacked gate_up [E, D, 2, F] / down [E, F, D] of ``jaxllm.models.moe`` (numpy views: sharded
placement slices them lazily)."""

from __future__ import annotations

import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.config_moe_families import GRANITE_MOE, GRANITE_MOE_SHARED
from jaxllm.weights.mappings import LinearLayer, Target, _linear, _linear_in_split, _rows, _same, _transpose

FUSED_EXPERT_ARCHS = (GRANITE_MOE, GRANITE_MOE_SHARED)


def check_float_checkpoint(cfg: ModelConfig) -> None:
    """Fused expert tensors are split at load from float weights only: a pre-quantized checkpoint is a ValueError."""
    if cfg.quant_from_checkpoint or cfg.quantization in ("awq", "gptq"):
        raise ValueError(f"quantization={cfg.quantization!r} checkpoints of {cfg.architecture} (fused expert "
                         "tensors) are not supported; load the unquantized checkpoint (optionally with "
                         "quantization='int8' or 'fp8')")


def granite_expert_targets(cfg: ModelConfig, i: int) -> dict[str, Target]:
    """GraniteMoe layer ``i``: ``router.layer`` [E, D] -> router [D, E]; ``input_linear`` [E, 2F, D] -> gate_up
    [E, D, 2, F]; ``output_linear`` [E, D, F] -> down [E, F, D]."""
    check_float_checkpoint(cfg)
    d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    p, mlp = f"model.layers.{i}.block_sparse_moe.", ("layers", i, "mlp")
    return {p + "router.layer.weight": Target((*mlp, "router"), (e, d), _transpose),
            p + "input_linear.weight": Target((*mlp, "gate_up"), (e, 2 * f, d),
                                              lambda w: w.transpose(0, 2, 1).reshape(e, d, 2, f)),
            p + "output_linear.weight": Target((*mlp, "down"), (e, d, f), lambda w: w.transpose(0, 2, 1))}


def granite_shared_layers(cfg: ModelConfig, i: int) -> list[LinearLayer]:
    """GraniteMoeShared's ``shared_mlp`` of layer ``i``: ``input_linear`` [2F_s, D] (gate rows first) -> the shared
    expert's gate_up [D, 2, F_s]; ``output_linear`` [D, F_s] -> down [F_s, D]."""
    f, d = cfg.shared_expert_intermediate_size, cfg.hidden_size
    p, ours = f"model.layers.{i}.shared_mlp.", ("layers", i, "mlp", "shared_expert")
    return [LinearLayer(p + "input_linear", (*ours, "gate_up"), 2 * f, d, (2, f), _linear(2, f)),
            LinearLayer(p + "output_linear", (*ours, "down"), d, f, (d,), _linear(d))]


def dbrx_map(cfg: ModelConfig) -> dict[str, Target | tuple[Target, ...]]:
    """DBRX's keys: ``transformer.wte`` / ``norm_f``, per block ``norm_attn_norm.norm_1`` / ``norm_2`` (LayerNorm
    weights), ``attn.Wqkv`` [(H + 2K) * Dh, D] -> q/k/v, ``attn.out_proj``, ``ffn.router.layer`` and the experts
    ``ffn.experts.mlp.w1`` (gate) / ``v1`` (up) [E * F, D] -> gate_up [E, D, 2, F], ``w2`` [E * F, D] -> down
    [E, F, D] (w2 is stored [in, out] per expert, as DBRX multiplies by it unTransposed)."""
    check_float_checkpoint(cfg)
    d, h, kh, dh, v = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size
    e, f = cfg.num_experts, cfg.moe_intermediate_size
    m: dict[str, Target | tuple[Target, ...]] = {
        "transformer.wte.weight": Target(("embed",), (v, d), _same),
        "transformer.norm_f.weight": Target(("norm", "weight"), (d,), _same),
    }
    if not cfg.tie_word_embeddings:  # (always, for a DBRX checkpoint; a pooling backbone has no LM head)
        m["lm_head.weight"] = Target(("lm_head",), (v, d), _same)
    per_expert = lambda w: w.reshape(e, f, d)
    for i in range(cfg.num_layers):
        p, L = f"transformer.blocks.{i}.", ("layers", i)
        attn, mlp = (*L, "self_attn"), (*L, "mlp")
        q_end, k_end = h * dh, (h + kh) * dh
        qkv_shape = (k_end + kh * dh, d)
        m.update({
            p + "norm_attn_norm.norm_1.weight": Target((*L, "input_layernorm", "weight"), (d,), _same),
            p + "norm_attn_norm.norm_2.weight": Target((*L, "post_attention_layernorm", "weight"), (d,), _same),
            p + "norm_attn_norm.attn.Wqkv.weight": (
                Target((*attn, "q_proj"), qkv_shape, _rows(0, q_end, _linear(h, dh))),
                Target((*attn, "k_proj"), qkv_shape, _rows(q_end, k_end, _linear(kh, dh))),
                Target((*attn, "v_proj"), qkv_shape, _rows(k_end, k_end + kh * dh, _linear(kh, dh)))),
            p + "norm_attn_norm.attn.out_proj.weight": Target((*attn, "o_proj"), (d, h * dh), _linear_in_split(h, dh)),
            p + "ffn.router.layer.weight": Target((*mlp, "router"), (e, d), _transpose),
            p + "ffn.experts.mlp.w1": Target((*mlp, "gate_up"), (e * f, d), lambda w: _gate_up_part(w, e, f, d),
                                             part=0, num_parts=2, axis=2),
            p + "ffn.experts.mlp.v1": Target((*mlp, "gate_up"), (e * f, d), lambda w: _gate_up_part(w, e, f, d),
                                             part=1, num_parts=2, axis=2),
            p + "ffn.experts.mlp.w2": Target((*mlp, "down"), (e * f, d), per_expert),
        })
    return m


def _gate_up_part(w: np.ndarray, e: int, f: int, d: int) -> np.ndarray:
    """DBRX's w1 / v1 [E * F, D] -> [E, D, F] (one part of gate_up [E, D, 2, F])."""
    return w.reshape(e, f, d).transpose(0, 2, 1)
