"""Per-architecture maps from HF checkpoint keys to our parameters, with the HF shape each key must have.

A ``Target`` says which parameter a HF tensor fills and how its HF layout becomes ours: HF linear weights
are [out, in]; our kernels are [in, ...out dims] so that einsums read naturally (e.g. q: [D, H, Dh]).
The transforms are numpy *views* (transpose + axis splits), so sharded placement can slice them lazily.
Fused parameters (gate/up -> ``gate_up[D, 2, F]``) are filled part by part (``part`` = index on ``axis``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxllm.config import ModelConfig

# HF keys that carry no weights of ours and are skipped wherever they appear.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class Target:
    path: tuple  # path of the parameter in the NNX state, e.g. ("layers", 3, "self_attn", "q_proj")
    hf_shape: tuple[int, ...]  # the shape the checkpoint tensor must have
    to_ours: Callable[[np.ndarray], np.ndarray]  # HF view -> our layout (for fused params: one part)
    part: int | None = None  # index along ``axis`` of a fused parameter
    num_parts: int = 1
    axis: int = 1


def _linear(*out_dims: int) -> Callable[[np.ndarray], np.ndarray]:
    """[out, in] -> [in, *out_dims]."""
    return lambda w: w.T.reshape((w.shape[1], *out_dims))


def _linear_in_split(*in_dims: int) -> Callable[[np.ndarray], np.ndarray]:
    """[out, in] -> [*in_dims, out] (o_proj: [D, H*Dh] -> [H, Dh, D])."""
    return lambda w: w.T.reshape((*in_dims, w.shape[0]))


def _reshape(*dims: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: w.reshape(dims)


def _same(w: np.ndarray) -> np.ndarray:
    return w


def llama_family_map(cfg: ModelConfig) -> dict[str, Target]:
    """Keys of Llama/Mistral/Qwen2/Qwen3 checkpoints (``model.`` prefix, ``lm_head`` when untied)."""
    d, f, h, kh, dh, v = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                          cfg.head_dim, cfg.vocab_size)
    m: dict[str, Target] = {
        "model.embed_tokens.weight": Target(("embed",), (v, d), _same),
        "model.norm.weight": Target(("norm", "weight"), (d,), _same),
    }
    if not cfg.tie_word_embeddings:
        m["lm_head.weight"] = Target(("lm_head",), (v, d), _same)
    for i in range(cfg.num_layers):
        p, L = f"model.layers.{i}.", ("layers", i)
        attn, mlp = (*L, "self_attn"), (*L, "mlp")
        m[p + "input_layernorm.weight"] = Target((*L, "input_layernorm", "weight"), (d,), _same)
        m[p + "post_attention_layernorm.weight"] = Target((*L, "post_attention_layernorm", "weight"), (d,), _same)
        m[p + "self_attn.q_proj.weight"] = Target((*attn, "q_proj"), (h * dh, d), _linear(h, dh))
        m[p + "self_attn.k_proj.weight"] = Target((*attn, "k_proj"), (kh * dh, d), _linear(kh, dh))
        m[p + "self_attn.v_proj.weight"] = Target((*attn, "v_proj"), (kh * dh, d), _linear(kh, dh))
        m[p + "self_attn.o_proj.weight"] = Target((*attn, "o_proj"), (d, h * dh), _linear_in_split(h, dh))
        if cfg.attention_bias:
            m[p + "self_attn.q_proj.bias"] = Target((*attn, "q_bias"), (h * dh,), _reshape(h, dh))
            m[p + "self_attn.k_proj.bias"] = Target((*attn, "k_bias"), (kh * dh,), _reshape(kh, dh))
            m[p + "self_attn.v_proj.bias"] = Target((*attn, "v_bias"), (kh * dh,), _reshape(kh, dh))
        if cfg.attention_out_bias:
            m[p + "self_attn.o_proj.bias"] = Target((*attn, "o_bias"), (d,), _same)
        if cfg.qk_norm:
            m[p + "self_attn.q_norm.weight"] = Target((*attn, "q_norm", "weight"), (dh,), _same)
            m[p + "self_attn.k_norm.weight"] = Target((*attn, "k_norm", "weight"), (dh,), _same)
        m[p + "mlp.gate_proj.weight"] = Target((*mlp, "gate_up"), (f, d), _linear(f), part=0, num_parts=2)
        m[p + "mlp.up_proj.weight"] = Target((*mlp, "gate_up"), (f, d), _linear(f), part=1, num_parts=2)
        m[p + "mlp.down_proj.weight"] = Target((*mlp, "down"), (d, f), _linear(d))
        if cfg.mlp_bias:
            m[p + "mlp.gate_proj.bias"] = Target((*mlp, "gate_up_bias"), (f,), _same, part=0, num_parts=2, axis=0)
            m[p + "mlp.up_proj.bias"] = Target((*mlp, "gate_up_bias"), (f,), _same, part=1, num_parts=2, axis=0)
            m[p + "mlp.down_proj.bias"] = Target((*mlp, "down_bias"), (d,), _same)
    return m


KEY_MAPS = {
    "LlamaForCausalLM": llama_family_map,
    "MistralForCausalLM": llama_family_map,
    "Qwen2ForCausalLM": llama_family_map,
    "Qwen3ForCausalLM": llama_family_map,
}


def key_map(cfg: ModelConfig) -> dict[str, Target]:
    return KEY_MAPS[cfg.architecture](cfg)


def optional_keys(cfg: ModelConfig) -> set[str]:
    """Keys that may be present without a target: a tied model's ``lm_head.weight`` (some exporters write it)."""
    return {"lm_head.weight"} if cfg.tie_word_embeddings else set()
