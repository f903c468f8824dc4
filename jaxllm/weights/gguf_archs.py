"""GGUF files of the families with their own HF names or converter edits: llama.cpp's tensor names -> the HF
checkpoint's names, the converter's tensor edits undone (configs: gguf_arch_configs.py; DeepSeek: gguf_deepseek.py).

GPT-2, GPT-NeoX, Falcon and DBRX checkpoints do not use llama's names (``transformer.h.N.attn.c_attn``,
``gpt_neox.layers.N.attention.query_key_value``, ...), so every family has a whole table here instead of additions
to gguf_names.py. What convert_hf_to_gguf.py changes, and ``arrays`` undoes:

- GPT-2: Conv1D weights ([in, out] in HF) are written transposed.
- GPT-NeoX: ``query_key_value``'s rows interleaved per head ([H, 3, Dh]) are written as [q | k | v].
- Falcon: ``query_key_value``'s rows grouped per kv head ([K, H / K + 2, Dh]) are written as [q | k | v]; with two
  norms, ``attn_norm`` is the MLP's (``ln_mlp``) and ``attn_norm_2`` attention's (``ln_attn``).
- StableLM: per-head q/k LayerNorms (``norms.{h}.weight`` [Dh]) are stacked into one [H, Dh] tensor.
- OLMo, GraniteMoe: llama's q/k row permutation.
- Nemotron: LayerNorm1P's weights are written + 1 (llama.cpp scales by w, HF by 1 + w).
- GraniteMoe: the fused ``input_linear`` [E, 2F, D] is split into gate and up experts (shared: likewise).
- DBRX: experts [E * F, D] are written [E, F, D] (``w2``: [E, D, F]).
- PhiMoE, Ernie 4.5 MoE, DeepSeek: per-expert tensors are stacked [E, ...].
Phi-2, Seed-OSS, GLM-4, EXAONE 4, Ernie 4.5 and Cohere2 tensors are written as they are (their rope pairs match
llama.cpp's). Partial rotary is ``rope.dimension_count`` < head_dim.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import gguf_arch_configs as cfgs
from .gguf_deepseek import DEEPSEEK_LAYER, DEEPSEEK_SPLIT, deepseek_config, kv_b_proj
from .gguf_names import unpermute_qk

_LLAMA_ATTN = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj"}
_LLAMA_MLP = {"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_NORMS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_LLAMA_GLOBALS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


@dataclass(frozen=True)
class GGUFArch:
    """One llama.cpp architecture: its HF architecture, global names {gguf module: HF module}, the HF layer
    prefix and per-layer names {gguf module: HF module}; ``config(ckpt, common)`` gives the config.json fields,
    ``split``: modules one GGUF tensor of which stacks several HF tensors, {gguf module: (HF module template with
    ``{i}``, the metadata key counting them)} (StableLM's per-head norms, MoE experts)."""

    hf_architecture: str
    globals: dict[str, str]
    layer_prefix: str
    layer: dict[str, str]
    config: Callable[[Any, dict[str, Any]], dict[str, Any]]
    split: dict[str, tuple[str, str]] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)  # {module: the module whose tensor yields it too}


_DEEPSEEK_ARCH = "DeepseekV3ForCausalLM"  # (V2 files: deepseek_config names DeepseekV2ForCausalLM)
ARCHS: dict[str, GGUFArch] = {
    "gpt2": GGUFArch(
        "GPT2LMHeadModel",
        {"token_embd": "transformer.wte", "position_embd": "transformer.wpe", "output_norm": "transformer.ln_f",
         "output": "lm_head"},
        "transformer.h.", {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj",
                           "ffn_norm": "ln_2", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}, cfgs.gpt2),
    "phi2": GGUFArch(
        "PhiForCausalLM", {"token_embd": "model.embed_tokens", "output_norm": "model.final_layernorm",
                           "output": "lm_head"},
        "model.layers.", {**_LLAMA_ATTN, "attn_output": "self_attn.dense", "attn_norm": "input_layernorm",
                          "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"}, cfgs.phi2),
    "stablelm": GGUFArch(
        "StableLmForCausalLM", {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"},
        "model.layers.", {**_LLAMA_ATTN, **_LLAMA_MLP, **_NORMS}, cfgs.stablelm,
        split={"attn_q_norm": ("self_attn.q_layernorm.norms.{i}", "attention.head_count"),
               "attn_k_norm": ("self_attn.k_layernorm.norms.{i}", "attention.head_count_kv")}),
    "gptneox": GGUFArch(
        "GPTNeoXForCausalLM", {"token_embd": "gpt_neox.embed_in", "output_norm": "gpt_neox.final_layer_norm",
                               "output": "embed_out"},
        "gpt_neox.layers.", {**_NORMS, "attn_qkv": "attention.query_key_value", "attn_output": "attention.dense",
                             "ffn_up": "mlp.dense_h_to_4h", "ffn_down": "mlp.dense_4h_to_h"}, cfgs.gptneox),
    "olmo": GGUFArch("OlmoForCausalLM", {"token_embd": "model.embed_tokens", "output": "lm_head"},
                     "model.layers.", {**_LLAMA_ATTN, **_LLAMA_MLP}, cfgs.olmo),
    "seed_oss": GGUFArch("SeedOssForCausalLM", {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                                                "output": "lm_head"},
                         "model.layers.", {**_LLAMA_ATTN, **_LLAMA_MLP, "attn_norm": "input_layernorm",
                                           "post_attention_norm": "post_attention_layernorm"}, cfgs.seed_oss),
    "nemotron": GGUFArch("NemotronForCausalLM", {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
                                                 "output": "lm_head"},
                         "model.layers.", {**_LLAMA_ATTN, **_NORMS, "ffn_up": "mlp.up_proj",
                                           "ffn_down": "mlp.down_proj"}, cfgs.nemotron),
    "glm4": GGUFArch("Glm4ForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                     {**_LLAMA_ATTN, **_NORMS, "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj",
                      "post_attention_norm": "post_self_attn_layernorm", "post_ffw_norm": "post_mlp_layernorm"},
                     cfgs.glm4),
    "exaone4": GGUFArch("Exaone4ForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                        {**_LLAMA_ATTN, **_LLAMA_MLP, "attn_q_norm": "self_attn.q_norm",
                         "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
                         "post_ffw_norm": "post_feedforward_layernorm"}, cfgs.exaone4),
    "ernie4_5": GGUFArch("Ernie4_5ForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                         {**_LLAMA_ATTN, **_LLAMA_MLP, **_NORMS}, cfgs.ernie4_5),
    "cohere2": GGUFArch("Cohere2ForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                        {**_LLAMA_ATTN, **_LLAMA_MLP, "attn_norm": "input_layernorm"}, cfgs.cohere2),
    "granitemoe": GGUFArch("GraniteMoeForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                           {**_LLAMA_ATTN, **_NORMS, "ffn_gate_inp": "block_sparse_moe.router.layer",
                            "ffn_gate_exps": "block_sparse_moe.input_linear",
                            "ffn_down_exps": "block_sparse_moe.output_linear",
                            "ffn_gate_shexp": "shared_mlp.input_linear", "ffn_down_shexp": "shared_mlp.output_linear"},
                           cfgs.granitemoe, merged={"ffn_up_exps": "ffn_gate_exps", "ffn_up_shexp": "ffn_gate_shexp"}),
    "falcon": GGUFArch("FalconForCausalLM", {"token_embd": "transformer.word_embeddings",
                                             "output_norm": "transformer.ln_f", "output": "lm_head"},
                       "transformer.h.", {"attn_norm": "input_layernorm", "attn_norm_2": "ln_attn",
                                          "attn_qkv": "self_attention.query_key_value",
                                          "attn_output": "self_attention.dense", "ffn_up": "mlp.dense_h_to_4h",
                                          "ffn_down": "mlp.dense_4h_to_h"}, cfgs.falcon),
    "ernie4_5-moe": GGUFArch(
        "Ernie4_5_MoeForCausalLM", _LLAMA_GLOBALS, "model.layers.",
        {**_LLAMA_ATTN, **_LLAMA_MLP, **_NORMS, "ffn_gate_inp": "mlp.gate",
         "exp_probs_b.bias": "mlp.moe_statics.e_score_correction_bias",
         **{f"ffn_{p}_shexp": f"mlp.shared_experts.{p}_proj" for p in ("gate", "up", "down")}},
        cfgs.ernie4_5_moe, split=DEEPSEEK_SPLIT),
    "dbrx": GGUFArch("DbrxForCausalLM", {"token_embd": "transformer.wte", "output_norm": "transformer.norm_f",
                                         "output": "lm_head"},
                     "transformer.blocks.",
                     {"attn_norm": "norm_attn_norm.norm_1", "attn_qkv": "norm_attn_norm.attn.Wqkv",
                      "attn_output": "norm_attn_norm.attn.out_proj", "attn_output_norm": "norm_attn_norm.norm_2",
                      "ffn_gate_inp": "ffn.router.layer", "ffn_gate_exps.weight": "ffn.experts.mlp.w1",
                      "ffn_up_exps.weight": "ffn.experts.mlp.v1", "ffn_down_exps.weight": "ffn.experts.mlp.w2"},
                     cfgs.dbrx),
    "phimoe": GGUFArch("PhimoeForCausalLM", _LLAMA_GLOBALS, "model.layers.",
                       {**_LLAMA_ATTN, **_NORMS, "ffn_gate_inp": "block_sparse_moe.gate"}, cfgs.phimoe,
                       split={f"ffn_{p}_exps": (f"block_sparse_moe.experts.{{i}}.{w}", "expert_count")
                              for p, w in (("gate", "w1"), ("up", "w3"), ("down", "w2"))}),
    "deepseek2": GGUFArch(_DEEPSEEK_ARCH, _LLAMA_GLOBALS, "model.layers.", DEEPSEEK_LAYER, deepseek_config,
                          split=DEEPSEEK_SPLIT, merged={"attn_v_b": "attn_k_b"}),
}
_CONV1D = ("attn_qkv", "attn_output", "ffn_up", "ffn_down")  # GPT-2's Conv1D modules, [in, out] in HF


def _split_name(name: str) -> tuple[str | None, str, str]:
    """``blk.3.attn_q.weight`` -> ("3", "attn_q", "weight"); ``output_norm.bias`` -> (None, "output_norm", "bias")."""
    m = _LAYER_RE.match(name)
    if m:
        return m.group(1), m.group(2), m.group(3)
    module, _, kind = name.rpartition(".")
    return None, module, kind


def hf_names(ckpt, name: str) -> list[str]:
    """HF names of the GGUF tensor ``name`` (several for a split tensor); a ValueError naming an unknown one."""
    arch = ARCHS[ckpt.architecture]
    layer, module, kind = _split_name(name)
    if layer is None and module in arch.globals:
        return [f"{arch.globals[module]}.{kind}"]
    if layer is not None and module in arch.split:
        template, key = arch.split[module]
        count = ckpt.arch_key(key, ckpt.arch_key("attention.head_count") if key.endswith("_kv") else None)
        if count is None:
            raise ValueError(f"GGUF tensor {name!r} stacks several HF tensors but the file has no "
                             f"{ckpt.architecture}.{key}")
        return [f"{arch.layer_prefix}{layer}.{template.format(i=i)}.{kind}" for i in range(int(count))]
    halves = {**arch.merged, **{owner: part for part, owner in arch.merged.items()}}
    if layer is not None and module in halves and f"blk.{layer}.{halves[module]}.{kind}" not in ckpt.tensor_keys():
        raise ValueError(f"GGUF tensor {name!r} has no partner blk.{layer}.{halves[module]}.{kind}: the two "
                         "halves make one HF tensor")
    if layer is not None and module in arch.merged:  # (the HF tensor its partner yields)
        return []
    if layer is not None and f"{module}.{kind}" in arch.layer:  # a whole HF name
        return [f"{arch.layer_prefix}{layer}.{arch.layer[f'{module}.{kind}']}"]
    if layer is not None and module == "attn_norm" and cfgs.has(ckpt, f"blk.{layer}.attn_norm_2.weight"):
        return [f"{arch.layer_prefix}{layer}.ln_mlp.{kind}"]  # (Falcon's two norms: attn_norm_2 is attention's)
    if layer is not None and module in arch.layer:
        return [f"{arch.layer_prefix}{layer}.{arch.layer[module]}.{kind}"]
    known = [*arch.globals, *(f"blk.N.{m}" for m in (*arch.layer, *arch.split))]
    raise ValueError(f"GGUF tensor {name!r} has no HF equivalent that jaxllm knows for {ckpt.architecture}; "
                     f"known tensors (.weight / .bias): {', '.join(known)}")


def is_merged_half(architecture: str, name: str) -> bool:
    """Whether the GGUF tensor ``name`` is the half of an HF tensor that its partner yields (GraniteMoe's up
    experts, DeepSeek's ``attn_v_b``): ``hf_names`` lists nothing for it and it needs no reading."""
    layer, module, _ = _split_name(name)
    return layer is not None and module in ARCHS[architecture].merged


def arrays(ckpt, name: str, w: np.ndarray) -> list[np.ndarray]:
    """The GGUF tensor ``name`` (float32, dims reversed to HF order) as the HF tensors ``hf_names`` lists (not
    for a merged half: ``is_merged_half``)."""
    arch, cfg = ckpt.architecture, ckpt.hf_config
    _, module, kind = _split_name(name)
    if arch == "gpt2" and module in _CONV1D and kind == "weight":
        return [np.ascontiguousarray(w.T)]
    if arch == "gptneox" and module == "attn_qkv":  # [q | k | v] rows -> [H, 3, Dh] rows
        heads = cfg["num_attention_heads"]
        return [np.ascontiguousarray(w.reshape(3, heads, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape))]
    if arch == "falcon" and module == "attn_qkv":  # [q | k | v] rows -> per kv head [H / K + 2, Dh] groups
        heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        q, k, v = np.split(w, [len(w) * heads // (heads + 2 * kv), len(w) * (heads + kv) // (heads + 2 * kv)])
        rest = w.shape[1:]
        groups = [q.reshape(kv, heads // kv, -1, *rest), k.reshape(kv, 1, -1, *rest), v.reshape(kv, 1, -1, *rest)]
        return [np.concatenate(groups, axis=1).reshape(w.shape)]
    if module in ARCHS[arch].split:
        return list(w)
    if arch == "deepseek2" and module == "attn_k_b":  # (with its partner attn_v_b)
        return [kv_b_proj(ckpt, name, w)]
    if module in ARCHS[arch].merged.values():  # GraniteMoe's gate and up halves -> the fused input_linear
        part = next(p for p, owner in ARCHS[arch].merged.items() if owner == module)
        return [np.concatenate([w, ckpt.tensor_array(name.replace(module, part))], axis=-2)]
    if arch in ("olmo", "granitemoe") and module in ("attn_q", "attn_k") and kind == "weight":
        return [unpermute_qk(w, cfg["num_attention_heads" if module == "attn_q" else "num_key_value_heads"])]
    if arch == "dbrx" and module.endswith("_exps"):  # [E, F, D] (down: [E, D, F]) -> HF's [E * F, D]
        w = w.swapaxes(1, 2) if module == "ffn_down_exps" else w
        return [np.ascontiguousarray(w).reshape(-1, w.shape[-1])]
    if arch == "ernie4_5-moe" and module == "exp_probs_b":  # HF keeps it [1, E]
        return [w.reshape(1, -1)]
    if arch == "nemotron" and module.endswith("norm") and kind == "weight":
        return [w - 1.0]
    return [w]


def gguf_name(hf_name: str, architecture: str) -> str | None:
    """HF name -> the llama.cpp tensor holding it (for errors naming what a file lacks); None when unknown."""
    arch = ARCHS[architecture]
    module, _, kind = hf_name.rpartition(".")
    for g, h in arch.globals.items():
        if module == h:
            return f"{g}.{kind}"
    if not module.startswith(arch.layer_prefix):
        return None
    layer, _, rest = module[len(arch.layer_prefix):].partition(".")
    for g, h in sorted(arch.layer.items(), key=lambda item: "." not in item[0]):  # whole names first
        if f"{rest}.{kind}" == h:
            return f"blk.{layer}.{g}"
        if rest == h:
            return f"blk.{layer}.{g}.{kind}"
    for g, (template, _) in arch.split.items():
        if re.fullmatch(re.escape(template).replace(r"\{i\}", r"\d+"), rest):
            return f"blk.{layer}.{g}.{kind}"
    return None
