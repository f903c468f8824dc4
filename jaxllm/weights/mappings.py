"""Per-architecture maps from HF checkpoint keys to our parameters, with the HF shape each key must have.

A ``Target`` says which parameter a HF tensor fills and how its HF layout becomes ours: HF linear weights
are [out, in]; our kernels are [in, ...out dims] so that einsums read naturally (e.g. q: [D, H, Dh]).
The transforms are numpy *views* (transpose + axis splits), so sharded placement can slice them lazily.
Fused parameters (gate/up -> ``gate_up[D, 2, F]``) are filled part by part (``part`` = index on ``axis``).
A fused checkpoint tensor (Phi-3's ``qkv_proj``) maps to a tuple of targets, one per parameter it fills: the
q/k/v projections stay separate parameters so that tensor parallelism splits each by heads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.config_classic import CLASSIC_ARCHS
from jaxllm.config_deepseek import DEEPSEEK_ARCHS
from jaxllm.config_dense import DENSE_ARCHS
from jaxllm.config_families import LAYER_NORMS
from jaxllm.quantization_config import INT4_METHODS

# HF keys that carry no weights of ours and are skipped wherever they appear.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class Target:
    path: tuple  # path of the parameter in the NNX state, e.g. ("layers", 3, "self_attn", "q_proj")
    hf_shape: tuple[int, ...]  # the shape the checkpoint tensor must have
    to_ours: Callable[[np.ndarray], np.ndarray]  # HF view -> our layout (for fused params: one part)
    part: int | tuple[int, ...] | None = None  # index along ``axis`` of a fused parameter (a tuple: several axes)
    num_parts: int | tuple[int, ...] = 1
    axis: int | tuple[int, ...] = 1

    def fused(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(num_parts, axes, part) as tuples, one entry per fused axis."""
        as_tuple = lambda v: v if isinstance(v, tuple) else (v,)
        return as_tuple(self.num_parts), as_tuple(self.axis), as_tuple(self.part)


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


@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """One HF linear layer of a decoder layer and the parameter (module) of ours it fills."""
    hf_prefix: str  # e.g. "model.layers.3.self_attn.q_proj" (HF weight [n, k])
    path: tuple  # our parameter / quantized module, e.g. ("layers", 3, "self_attn", "q_proj")
    n: int  # output features
    k: int  # input features
    out_dims: tuple[int, ...]  # our output dims (q_proj: (H, Dh))
    to_ours: Callable[[np.ndarray], np.ndarray]  # HF weight [n, k] -> ours [*in_dims, *out_dims] (or one part)
    part: int | None = None  # gate_proj 0 / up_proj 1 of the fused gate_up


def _rows(start: int, stop: int, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A slice of output rows [start, stop) of a fused [out, in] weight, then ``fn``."""
    return lambda w: fn(w[start:stop])


def fused_linear_targets(cfg: ModelConfig, i: int) -> dict[str, Target | tuple[Target, ...]]:
    """Phi-3's fused weights of layer ``i``: ``qkv_proj`` [(H + 2K) * Dh, D] -> q/k/v projections,
    ``gate_up_proj`` [2F, D] (gate rows first) -> gate_up [D, 2, F]."""
    d, f, h, kh, dh = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    p, attn, mlp = f"model.layers.{i}.", ("layers", i, "self_attn"), ("layers", i, "mlp")
    qkv_shape, q_end, k_end = ((h + 2 * kh) * dh, d), h * dh, (h + kh) * dh
    return {
        p + "self_attn.qkv_proj.weight": (
            Target((*attn, "q_proj"), qkv_shape, _rows(0, q_end, _linear(h, dh))),
            Target((*attn, "k_proj"), qkv_shape, _rows(q_end, k_end, _linear(kh, dh))),
            Target((*attn, "v_proj"), qkv_shape, _rows(k_end, k_end + kh * dh, _linear(kh, dh)))),
        p + "self_attn.o_proj.weight": Target((*attn, "o_proj"), (d, h * dh), _linear_in_split(h, dh)),
        p + "mlp.gate_up_proj.weight": Target((*mlp, "gate_up"), (2 * f, d), _linear(2, f)),
        p + "mlp.down_proj.weight": Target((*mlp, "down"), (d, f), _linear(d)),
    }


def linear_layers(cfg: ModelConfig, i: int) -> list[LinearLayer]:
    """The linear layers of decoder layer ``i``: q/k/v/o, then (a dense MLP) gate/up fused into gate_up and down;
    a MoE layer's experts are not linear layers (``expert_targets``)."""
    d, f, h, kh, dh = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    p, attn, mlp = f"model.layers.{i}.", ("layers", i, "self_attn"), ("layers", i, "mlp")
    attention = [
        LinearLayer(p + "self_attn.q_proj", (*attn, "q_proj"), h * dh, d, (h, dh), _linear(h, dh)),
        LinearLayer(p + "self_attn.k_proj", (*attn, "k_proj"), kh * dh, d, (kh, dh), _linear(kh, dh)),
        LinearLayer(p + "self_attn.v_proj", (*attn, "v_proj"), kh * dh, d, (kh, dh), _linear(kh, dh)),
        LinearLayer(p + "self_attn.o_proj", (*attn, "o_proj"), d, h * dh, (d,), _linear_in_split(h, dh)),
    ]
    if cfg.is_moe_layer(i):
        return attention + shared_expert_layers(cfg, i)
    if cfg.mlp_type == "plain":  # Starcoder2: c_fc [F, D], c_proj [D, F]
        return attention + [LinearLayer(p + "mlp.c_fc", (*mlp, "c_fc"), f, d, (f,), _linear(f)),
                            LinearLayer(p + "mlp.c_proj", (*mlp, "c_proj"), d, f, (d,), _linear(d))]
    return attention + [
        LinearLayer(p + "mlp.gate_proj", (*mlp, "gate_up"), f, d, (f,), _linear(f), part=0),
        LinearLayer(p + "mlp.up_proj", (*mlp, "gate_up"), f, d, (f,), _linear(f), part=1),
        LinearLayer(p + "mlp.down_proj", (*mlp, "down"), d, f, (d,), _linear(d)),
    ]


def shared_expert_layers(cfg: ModelConfig, i: int) -> list[LinearLayer]:
    """Qwen2-MoE's shared expert of MoE layer ``i`` (gate/up fused into its gate_up, down); [] for the others."""
    f, d = cfg.shared_expert_intermediate_size, cfg.hidden_size
    if not f:
        return []
    if cfg.architecture == "GraniteMoeSharedForCausalLM":  # (its fused shared_mlp.input_linear / output_linear)
        from jaxllm.weights.mappings_moe import granite_shared_layers

        return granite_shared_layers(cfg, i)
    name = "shared_experts" if cfg.architecture == "Ernie4_5_MoeForCausalLM" else "shared_expert"
    p, ours = f"model.layers.{i}.mlp.{name}.", ("layers", i, "mlp", "shared_expert")
    return [LinearLayer(p + "gate_proj", (*ours, "gate_up"), f, d, (f,), _linear(f), part=0),
            LinearLayer(p + "up_proj", (*ours, "gate_up"), f, d, (f,), _linear(f), part=1),
            LinearLayer(p + "down_proj", (*ours, "down"), d, f, (d,), _linear(d))]


def _linear_targets(cfg: ModelConfig, lin: LinearLayer) -> dict[str, Target]:
    """Keys of one linear layer: its ``weight`` (plain, or quantized at load time), an fp8 checkpoint's
    ``weight`` + ``weight_scale``, or the AWQ/GPTQ tensors after ``quantized_checkpoint`` converted them
    (``qweight`` [K // 8, N], ``scales``/``zeros`` [K // G, N], act order ``perm`` [K])."""
    fused = {} if lin.part is None else {"part": lin.part, "num_parts": 2}
    if cfg.quantization in INT4_METHODS:
        group = lin.k if cfg.quant_group_size == -1 else cfg.quant_group_size
        m = {}
        for name, rows in (("qweight", lin.k // 8), ("scales", lin.k // group), ("zeros", lin.k // group)):
            m[f"{lin.hf_prefix}.{name}"] = Target((*lin.path, name), (rows, lin.n), _reshape(rows, *lin.out_dims),
                                                  axis=1, **fused)
        if cfg.quant_desc_act and lin.part != 1:  # gate_proj and up_proj share the perm (named gate_proj's)
            m[f"{lin.hf_prefix}.perm"] = Target((*lin.path, "perm"), (lin.k,), _same)
        return m
    if cfg.quant_from_checkpoint:
        return {f"{lin.hf_prefix}.weight": Target((*lin.path, "qweight"), (lin.n, lin.k), lin.to_ours, **fused),
                f"{lin.hf_prefix}.weight_scale": Target((*lin.path, "scale"), (lin.n,), _reshape(*lin.out_dims),
                                                        axis=0, **fused)}
    return {f"{lin.hf_prefix}.weight": Target(lin.path, (lin.n, lin.k), lin.to_ours, **fused)}


def llama_family_map(cfg: ModelConfig) -> dict[str, Target | tuple[Target, ...]]:
    """Keys of the dense decoder checkpoints (Llama/Mistral/Qwen2/Qwen3/Gemma/Phi-3/OLMo 2: ``model.`` prefix,
    ``lm_head`` when untied; the layer norms of ``cfg.norm_placement``)."""

    d, f, h, kh, dh, v = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                          cfg.head_dim, cfg.vocab_size)
    m: dict[str, Target] = {
        "model.embed_tokens.weight": Target(("embed",), (v, d), _same),
        "model.norm.weight": Target(("norm", "weight"), (d,), _same),
    }
    if cfg.norm_bias:  # (LayerNorm biases: Starcoder2)
        m["model.norm.bias"] = Target(("norm", "bias"), (d,), _same)
    if not cfg.tie_word_embeddings:
        m["lm_head.weight"] = Target(("lm_head",), (v, d), _same)
    if cfg.lm_head_bias:  # (PhiMoE)
        m["lm_head.bias"] = Target(("lm_head_bias",), (v,), _same)
    for i in range(cfg.num_layers):
        p, L = f"model.layers.{i}.", ("layers", i)
        attn, mlp = (*L, "self_attn"), (*L, "mlp")
        for name in LAYER_NORMS[cfg.norm_placement]:
            m[p + name + ".weight"] = Target((*L, name, "weight"), (d,), _same)
            if cfg.norm_bias:
                m[p + name + ".bias"] = Target((*L, name, "bias"), (d,), _same)
        if cfg.fused_checkpoint:
            m.update(fused_linear_targets(cfg, i))
        else:
            for lin in linear_layers(cfg, i):
                m.update(_linear_targets(cfg, lin))
        if cfg.is_moe_layer(i):
            m.update(expert_targets(cfg, i))
        if cfg.attention_bias:
            m[p + "self_attn.q_proj.bias"] = Target((*attn, "q_bias"), (h * dh,), _reshape(h, dh))
            m[p + "self_attn.k_proj.bias"] = Target((*attn, "k_bias"), (kh * dh,), _reshape(kh, dh))
            m[p + "self_attn.v_proj.bias"] = Target((*attn, "v_bias"), (kh * dh,), _reshape(kh, dh))
        if cfg.attention_out_bias:
            m[p + "self_attn.o_proj.bias"] = Target((*attn, "o_bias"), (d,), _same)
        if cfg.qk_norm == "head":
            m[p + "self_attn.q_norm.weight"] = Target((*attn, "q_norm", "weight"), (dh,), _same)
            m[p + "self_attn.k_norm.weight"] = Target((*attn, "k_norm", "weight"), (dh,), _same)
        elif cfg.qk_norm == "full":
            m[p + "self_attn.q_norm.weight"] = Target((*attn, "q_norm", "weight"), (h * dh,), _reshape(h, dh))
            m[p + "self_attn.k_norm.weight"] = Target((*attn, "k_norm", "weight"), (kh * dh,), _reshape(kh, dh))
        elif cfg.qk_norm == "per_head":  # (Cohere: a weight [H, Dh] in the checkpoint too)
            m[p + "self_attn.q_norm.weight"] = Target((*attn, "q_norm", "weight"), (h, dh), _same)
            m[p + "self_attn.k_norm.weight"] = Target((*attn, "k_norm", "weight"), (kh, dh), _same)
        if cfg.mlp_bias and cfg.mlp_type == "plain":
            m[p + "mlp.c_fc.bias"] = Target((*mlp, "c_fc_bias"), (f,), _same)
            m[p + "mlp.c_proj.bias"] = Target((*mlp, "c_proj_bias"), (d,), _same)
        elif cfg.mlp_bias:
            m[p + "mlp.gate_proj.bias"] = Target((*mlp, "gate_up_bias"), (f,), _same, part=0, num_parts=2, axis=0)
            m[p + "mlp.up_proj.bias"] = Target((*mlp, "gate_up_bias"), (f,), _same, part=1, num_parts=2, axis=0)
            m[p + "mlp.down_proj.bias"] = Target((*mlp, "down_bias"), (d,), _same)
    return m


# HF names of a MoE layer's block and of each expert's (gate, up, down) projections
_MOE_NAMES = {"MixtralForCausalLM": ("block_sparse_moe", ("w1", "w3", "w2")),
              "Qwen3MoeForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "Qwen2MoeForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "OlmoeForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "DeepseekV2ForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "DeepseekV3ForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj")),
              "PhimoeForCausalLM": ("block_sparse_moe", ("w1", "w3", "w2")),
              "Ernie4_5_MoeForCausalLM": ("mlp", ("gate_proj", "up_proj", "down_proj"))}


def expert_linears(cfg: ModelConfig, i: int) -> list[tuple[str, int, int, str, int]]:
    """(HF prefix, expert j, output features, our parameter "gate_up" / "down", gate/up part) of every expert
    projection of MoE layer ``i`` (HF [out, in] weights; jaxllm.models.moe stacks them)."""
    block, (gate, up, down) = _MOE_NAMES[cfg.architecture]
    f, d = cfg.moe_intermediate_size, cfg.hidden_size
    p = f"model.layers.{i}.{block}.experts."
    return [row for j in range(cfg.num_experts)
            for row in ((f"{p}{j}.{gate}", j, f, "gate_up", 0), (f"{p}{j}.{up}", j, f, "gate_up", 1),
                        (f"{p}{j}.{down}", j, d, "down", 0))]


def expert_targets(cfg: ModelConfig, i: int) -> dict[str, Target]:
    """Keys of MoE layer ``i``: the router ``gate`` [E, D] -> router [D, E], and every expert's gate/up [F, D] and
    down [D, F], stacked at load into gate_up [E, D, 2, F] and down [E, F, D] (jaxllm.models.moe). An fp8
    checkpoint's experts fill ``qweight`` (same layout) and ``scale`` (gate_up [E, 2, F], down [E, D]) from each
    expert's ``weight_scale`` (per channel after quantized_checkpoint)."""
    d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    if cfg.architecture in ("GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM"):  # (fused experts)
        from jaxllm.weights.mappings_moe import granite_expert_targets

        return granite_expert_targets(cfg, i)
    if cfg.architecture == "GptOssForCausalLM":  # (stacked, interleaved experts; a biased router)
        from jaxllm.weights.mappings_gpt_oss import gpt_oss_expert_targets

        return gpt_oss_expert_targets(cfg, i)
    block = _MOE_NAMES[cfg.architecture][0]
    mlp = ("layers", i, "mlp")
    m = {f"model.layers.{i}.{block}.gate.weight": Target((*mlp, "router"), (e, d), _transpose)}
    if cfg.moe_correction_bias:  # Ernie 4.5's moe_statics.e_score_correction_bias [1, E] -> [E]
        m[f"model.layers.{i}.{block}.moe_statics.e_score_correction_bias"] = Target((*mlp, "router_bias"), (1, e),
                                                                                     _reshape(e))
    if cfg.shared_expert_intermediate_size and cfg.shared_expert_gated:  # Qwen2-MoE's gate [1, D] -> [D, 1]
        m[f"model.layers.{i}.{block}.shared_expert_gate.weight"] = Target((*mlp, "shared_expert_gate"), (1, d),
                                                                          _transpose)
    fp8 = cfg.quant_from_checkpoint
    for prefix, j, n, name, c in expert_linears(cfg, i):
        k = d if name == "gate_up" else f
        fused = {"part": (j, c), "num_parts": (e, 2)} if name == "gate_up" else {"part": j, "num_parts": e}
        w_axes = (0, 2) if name == "gate_up" else 0
        path = (*mlp, name, "qweight") if fp8 else (*mlp, name)
        m[prefix + ".weight"] = Target(path, (n, k), _transpose, axis=w_axes, **fused)
        if fp8:
            m[prefix + ".weight_scale"] = Target((*mlp, name, "scale"), (n,), _same,
                                                 axis=(0, 1) if name == "gate_up" else 0, **fused)
    return m


def _transpose(w: np.ndarray) -> np.ndarray:
    return w.T


KEY_MAPS = {
    "LlamaForCausalLM": llama_family_map,
    "MistralForCausalLM": llama_family_map,
    "Qwen2ForCausalLM": llama_family_map,
    "Qwen3ForCausalLM": llama_family_map,
    "GemmaForCausalLM": llama_family_map,
    "Gemma2ForCausalLM": llama_family_map,
    "Gemma3ForCausalLM": llama_family_map,
    "Phi3ForCausalLM": llama_family_map,
    "Olmo2ForCausalLM": llama_family_map,
    "MixtralForCausalLM": llama_family_map,
    "Qwen3MoeForCausalLM": llama_family_map,
    "Qwen2MoeForCausalLM": llama_family_map,
    "OlmoeForCausalLM": llama_family_map,
    "GraniteForCausalLM": llama_family_map,
    "SmolLM3ForCausalLM": llama_family_map,
    "Starcoder2ForCausalLM": llama_family_map,
    "CohereForCausalLM": llama_family_map,
    "GraniteMoeForCausalLM": llama_family_map,
    "GraniteMoeSharedForCausalLM": llama_family_map,
    "PhimoeForCausalLM": llama_family_map,
    "Ernie4_5_MoeForCausalLM": llama_family_map,
}


# A multimodal checkpoint's language-model key prefixes -> ours, and the prefixes of its vision parts, which a
# text-only load does not read (checkpoints written by transformers 4.x and 5.x both).
MULTIMODAL_KEYS = {
    "Gemma3ForConditionalGeneration": (
        (("language_model.model.", "model."), ("model.language_model.", "model."),
         ("language_model.lm_head.", "lm_head.")),
        ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."),
    ),
}


def checkpoint_key(cfg: ModelConfig, name: str) -> str | None:
    """The key of ours for a checkpoint key: itself, a multimodal checkpoint's language-model key without its
    prefix, or None for its vision tower's keys and Ernie 4.5 MoE's MTP layer (not loaded)."""
    if cfg.architecture in CLASSIC_ARCHS:
        from jaxllm.weights.mappings_classic import classic_checkpoint_key  # (it builds on this module)

        return classic_checkpoint_key(cfg, name)
    if cfg.architecture in DEEPSEEK_ARCHS:
        from jaxllm.weights.mappings_deepseek import is_mtp_key  # (it builds on this module)

        return None if is_mtp_key(cfg, name) else name
    if cfg.architecture == "Ernie4_5_MoeForCausalLM" and "mtp" in name:  # (its multi-token-prediction layer: a
        return None  # speculative head, not part of the causal LM, skipped as transformers and vLLM do)
    if cfg.multimodal_architecture is None:
        return name
    renames, vision = MULTIMODAL_KEYS[cfg.multimodal_architecture]
    if name.startswith(vision):
        return None
    for prefix, ours in renames:
        if name.startswith(prefix):
            return ours + name[len(prefix):]
    return name


def key_map(cfg: ModelConfig) -> dict[str, Target | tuple[Target, ...]]:
    if cfg.architecture in CLASSIC_ARCHS:  # GPT-2, GPT-NeoX, Phi, StableLM, OPT: renamed Llama-style maps
        from jaxllm.weights.mappings_classic import classic_family_map  # (it builds on this module)

        return classic_family_map(cfg)
    if cfg.architecture in DEEPSEEK_ARCHS:  # (MLA attention and DeepSeek MoE: a map of their own)
        from jaxllm.weights.mappings_deepseek import deepseek_family_map  # (it builds on this module)

        return deepseek_family_map(cfg)
    if cfg.architecture in DENSE_ARCHS:  # OLMo, GLM, ...: renamed Llama-style maps (jaxllm.config_dense)
        from jaxllm.weights.mappings_dense import dense_family_map  # (it builds on this module)

        return dense_family_map(cfg)
    if cfg.architecture == "DbrxForCausalLM":  # (its own names: transformer.blocks.N, fused Wqkv and experts)
        from jaxllm.weights.mappings_moe import dbrx_map

        return dbrx_map(cfg)
    if cfg.attention_sinks:  # (gpt-oss: Llama-style keys plus each layer's self_attn.sinks)
        from jaxllm.weights.mappings_gpt_oss import sink_targets

        return {**llama_family_map(cfg), **sink_targets(cfg)}
    return KEY_MAPS[cfg.architecture](cfg)


def optional_keys(cfg: ModelConfig) -> set[str]:
    """Keys that may be present without a target: a tied model's ``lm_head.weight`` (some exporters write it)."""
    return {"lm_head.weight"} if cfg.tie_word_embeddings else set()
