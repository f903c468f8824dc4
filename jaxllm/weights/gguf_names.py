"""llama.cpp's tensor names and q/k row order -> HuggingFace's, for ``GGUFCheckpoint``.

A GGUF names weights ``blk.N.attn_q.weight`` where a HF checkpoint has ``model.layers.N.self_attn.q_proj.weight``;
a few llama.cpp names mean different HF tensors per architecture (Gemma 2/3's ``ffn_norm``, Phi-3's fused
projections, the MoE router and Qwen2-MoE's shared expert, Starcoder2's plain MLP and LayerNorm biases), and one stacked expert tensor holds what HF keeps as one tensor per expert. llama.cpp's converter also interleaves the rotary halves of llama's q/k rows; ``unpermute_qk``
restores HF's order (``permute_qk`` is its inverse, for writing test files). Kept apart from the file reader
because it is a fixed translation table, independent of how the file is parsed.
"""

from __future__ import annotations

import re

import numpy as np

_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "output_norm.bias": "model.norm.bias",
}
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate.bias": "mlp.gate_proj.bias",
    "ffn_up.bias": "mlp.up_proj.bias",
    "ffn_down.bias": "mlp.down_proj.bias",
}
# Where one llama.cpp name means another HF tensor in some architectures (Gemma 2/3's ffn_norm is the norm before
# the MLP, Phi-3's fused qkv and gate_up).
_ARCH_LAYER_TENSORS = {
    "gemma2": {"ffn_norm.weight": "pre_feedforward_layernorm.weight"},
    "gemma3": {"ffn_norm.weight": "pre_feedforward_layernorm.weight"},
    "phi3": {"attn_qkv.weight": "self_attn.qkv_proj.weight", "ffn_up.weight": "mlp.gate_up_proj.weight"},
    "starcoder2": {"attn_norm.bias": "input_layernorm.bias", "ffn_norm.bias": "post_attention_layernorm.bias",
                   "ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias",
                   "ffn_down.weight": "mlp.c_proj.weight", "ffn_down.bias": "mlp.c_proj.bias"},
    "qwen2moe": {"ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",
                 "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
                 "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
                 "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight"},
}
_POST_NORMS = {"post_attention_norm.weight": "post_attention_layernorm.weight",
               "post_ffw_norm.weight": "post_feedforward_layernorm.weight"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
# MoE architectures: the HF block holding the router and experts, and each expert's (gate, up, down) names. A GGUF
# stores a layer's experts stacked ([E, F, D] / [E, D, F]); HF checkpoints keep one tensor per expert.
MOE_BLOCKS = {"llama": ("block_sparse_moe", ("w1", "w3", "w2")),
              "qwen3moe": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "qwen2moe": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "olmoe": ("mlp", ("gate_proj", "up_proj", "down_proj"))}
_EXPERT_STACKS = ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")
_LEGACY_EXPERT_RE = re.compile(r"^ffn_(gate|up|down)\.(\d+)\.weight$")


def _layer_tensors(architecture: str) -> dict[str, str]:
    table = {**_LAYER_TENSORS, **_ARCH_LAYER_TENSORS.get(architecture, {})}
    if architecture in ("gemma2", "gemma3", "olmo2"):
        table.update(_POST_NORMS)
    if architecture in MOE_BLOCKS:
        table["ffn_gate_inp.weight"] = f"{MOE_BLOCKS[architecture][0]}.gate.weight"
    return table


def expert_names(gguf_name: str, architecture: str, num_experts: int) -> list[str] | None:
    """HF names of the experts a stacked llama.cpp tensor holds, in stack order (``blk.3.ffn_gate_exps.weight``
    of Mixtral -> ``model.layers.3.block_sparse_moe.experts.{0..E-1}.w1.weight``); None for any other tensor."""
    m = _LAYER_RE.match(gguf_name)
    if architecture not in MOE_BLOCKS or m is None or m.group(2) not in _EXPERT_STACKS:
        return None
    block, projections = MOE_BLOCKS[architecture]
    proj = projections[_EXPERT_STACKS.index(m.group(2))]
    return [f"model.layers.{m.group(1)}.{block}.experts.{j}.{proj}.weight" for j in range(num_experts)]


def hf_tensor_name(gguf_name: str, architecture: str = "llama") -> str:
    """llama.cpp tensor name -> HF name (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)."""
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    table = _layer_tensors(architecture)
    m = _LAYER_RE.match(gguf_name)
    if m and m.group(2) in table:
        return f"model.layers.{m.group(1)}.{table[m.group(2)]}"
    legacy = _LEGACY_EXPERT_RE.match(m.group(2)) if m and architecture in MOE_BLOCKS else None
    if legacy:  # llama.cpp's first Mixtral layout: one tensor per expert, blk.N.ffn_gate.E.weight
        block, projections = MOE_BLOCKS[architecture]
        proj = projections[("gate", "up", "down").index(legacy.group(1))]
        return f"model.layers.{m.group(1)}.{block}.experts.{legacy.group(2)}.{proj}.weight"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no HF equivalent that jaxllm knows for {architecture}; known "
                     f"tensors: {', '.join(_GLOBAL_TENSORS)}, blk.N.{{{', '.join(table)}}}")


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation. ``w``: [n_heads*Dh, ...] (a weight [H*Dh, D] or a bias [H*Dh]).

    llama.cpp stores, inside each head, rows (0, Dh/2, 1, Dh/2+1, ...) interleaved as adjacent pairs; HF keeps
    the two rotary halves contiguous. View rows as [n_heads, Dh/2, 2] and swap the last two axes back."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"cannot un-permute {rows} rows into {n_heads} heads of even size")
    return np.ascontiguousarray(
        w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (HF -> GGUF), the inverse of :func:`unpermute_qk`; used to write test files."""
    rows = w.shape[0]
    return np.ascontiguousarray(
        w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def gguf_tensor_name(hf_name: str, architecture: str) -> str | None:
    """HF name -> the llama.cpp tensor that holds it (an expert's: the layer's stacked tensor), for error
    messages that name what the file lacks; None when llama.cpp has no such tensor."""
    from .gguf_archs import ARCHS, gguf_name

    if architecture in ARCHS:
        return gguf_name(hf_name, architecture)
    inverse = {v: k for k, v in _GLOBAL_TENSORS.items()}
    if hf_name in inverse:
        return inverse[hf_name]
    m = re.match(r"^model\.layers\.(\d+)\.(.+)$", hf_name)
    if m is None:
        return None
    layer, rest = m.groups()
    if architecture in MOE_BLOCKS:
        block, projections = MOE_BLOCKS[architecture]
        e = re.match(rf"^{block}\.experts\.\d+\.(\w+)\.weight$", rest)
        if e and e.group(1) in projections:
            return f"blk.{layer}.{_EXPERT_STACKS[projections.index(e.group(1))]}"
    names = {v: k for k, v in _layer_tensors(architecture).items()}
    return f"blk.{layer}.{names[rest]}" if rest in names else None
