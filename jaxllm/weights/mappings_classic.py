"""Checkpoint key maps of GPT-2, GPT-NeoX (Pythia), Phi, StableLM, OPT, GPT-J and Falcon.

Each family's parameters are the shared decoder's (jaxllm.models.llama), so its map is the Llama-style map of
``llama_family_map`` with the keys renamed to the family's, plus what only it has:

- GPT-2: Conv1D weights stored [in, out] (transposed at load), the fused ``c_attn`` [D, 3D] (columns q | k | v)
  split into the q/k/v projections, learned positions ``wpe``. Hub checkpoints of the base model have no
  ``transformer.`` prefix and carry the causal-mask buffers ``attn.bias`` / ``attn.masked_bias``: both read.
- GPT-NeoX: ``query_key_value`` [3D, D] whose output rows interleave per head as [H, 3, Dh], split at load.
- Phi: q/k LayerNorms over each head with biases, ``lm_head.bias``.
- StableLM: the per-head q/k LayerNorms stored one module per head (``norms.{h}.weight`` [Dh]) stacked into [H, Dh].
- OPT: learned positions of max_position_embeddings + 2 rows, ``project_in`` / ``project_out`` when
  ``word_embed_proj_dim`` differs from the model dim.
- GPT-J: ``transformer.h.{i}.attn.{q,k,v,out}_proj``, ``mlp.fc_in`` / ``fc_out``, ``lm_head.bias``.
- Falcon: ``self_attention.query_key_value`` [(H + 2K) * Dh, D] whose rows are [K, H / K + 2, Dh] (per kv head:
  its query heads, its key, its value; this one layout also reads multi-query and per-head interleaved
  checkpoints, K = 1 and K = H), ``ln_attn`` / ``ln_mlp`` for two parallel norms.
Every split is a numpy view, so sharded placement slices it lazily.
"""

from __future__ import annotations

import dataclasses

from jaxllm.config import ModelConfig
from jaxllm.config_classic import FALCON, GPT2, GPT_NEOX, GPTJ, OPT, PHI, STABLELM
from jaxllm.weights.mappings import Target, _linear, _same, _transpose, llama_family_map

# per family: (top-level renames, layer prefix, layer-relative renames, [in, out]-stored linear layers)
_NAMES = {
    GPT2: ({"model.embed_tokens.": "transformer.wte.", "model.norm.": "transformer.ln_f."}, "transformer.h.",
           {"input_layernorm": "ln_1", "post_attention_layernorm": "ln_2", "self_attn.o_proj": "attn.c_proj"},
           ("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")),
    GPT_NEOX: ({"model.embed_tokens.": "gpt_neox.embed_in.", "model.norm.": "gpt_neox.final_layer_norm.",
                "lm_head.": "embed_out."}, "gpt_neox.layers.",
               {"self_attn.o_proj": "attention.dense", "mlp.c_fc": "mlp.dense_h_to_4h",
                "mlp.c_proj": "mlp.dense_4h_to_h"}, ()),
    PHI: ({"model.norm.": "model.final_layernorm."}, "model.layers.",
          {"self_attn.o_proj": "self_attn.dense", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
           "self_attn.q_norm": "self_attn.q_layernorm", "self_attn.k_norm": "self_attn.k_layernorm"}, ()),
    STABLELM: ({}, "model.layers.", {}, ()),
    OPT: ({"model.embed_tokens.": "model.decoder.embed_tokens.", "model.norm.": "model.decoder.final_layer_norm."},
          "model.decoder.layers.",
          {"input_layernorm": "self_attn_layer_norm", "post_attention_layernorm": "final_layer_norm",
           "self_attn.o_proj": "self_attn.out_proj", "mlp.c_fc": "fc1", "mlp.c_proj": "fc2"}, ()),
    GPTJ: ({"model.embed_tokens.": "transformer.wte.", "model.norm.": "transformer.ln_f."}, "transformer.h.",
           {"input_layernorm": "ln_1", "self_attn.o_proj": "attn.out_proj", "self_attn": "attn",
            "mlp.c_fc": "mlp.fc_in", "mlp.c_proj": "mlp.fc_out"}, ()),
    FALCON: ({"model.embed_tokens.": "transformer.word_embeddings.", "model.norm.": "transformer.ln_f."},
             "transformer.h.", {"self_attn.o_proj": "self_attention.dense", "mlp.c_fc": "mlp.dense_h_to_4h",
                                "mlp.c_proj": "mlp.dense_4h_to_h"}, ()),
}
# Falcon's two parallel norms (new architecture): attention's and the MLP's
_FALCON_TWO_NORMS = {"input_layernorm": "ln_attn", "post_attention_layernorm": "ln_mlp"}
# checkpoint buffers that hold no weights (causal masks of older transformers versions)
CLASSIC_IGNORED = {GPT2: (".attn.bias", ".attn.masked_bias"), GPT_NEOX: (".attention.bias", ".attention.masked_bias"),
                   GPTJ: (".attn.bias", ".attn.masked_bias")}


def _rename(key: str, top: dict[str, str], layer_prefix: str, layer: dict[str, str]) -> str:
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old):]
    if not key.startswith("model.layers."):
        return key
    index, rest = key[len("model.layers."):].split(".", 1)
    for old, new in layer.items():
        if rest.startswith(old + "."):
            rest = new + rest[len(old):]
            break
    return f"{layer_prefix}{index}.{rest}"


def _stored_in_out(t: Target) -> Target:
    """A Target of an [out, in] weight for the same weight stored [in, out] (GPT-2's Conv1D)."""
    return dataclasses.replace(t, hf_shape=t.hf_shape[::-1], to_ours=lambda w, f=t.to_ours: f(w.T))


def _fused_qkv(cfg: ModelConfig, i: int, split) -> dict[str, tuple[Target, ...]]:
    """The fused q/k/v weight and bias of layer ``i``; ``split(w, j)`` -> part j (0 q, 1 k, 2 v) of a [3D, D]
    weight or [3D] bias (as an [out, ...] array)."""
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    attn = ("layers", i, "self_attn")
    names = (("q_proj", "q_bias"), ("k_proj", "k_bias"), ("v_proj", "v_bias"))
    weight = tuple(Target((*attn, w), (3 * d, d), lambda a, j=j: _linear(h, dh)(split(a, j)))
                   for j, (w, _) in enumerate(names))
    bias = tuple(Target((*attn, b), (3 * d,), lambda a, j=j: split(a, j).reshape(h, dh))
                 for j, (_, b) in enumerate(names))
    return {"weight": weight, "bias": bias}


def _gpt2_qkv(cfg: ModelConfig, i: int) -> dict[str, Target | tuple[Target, ...]]:
    """c_attn: weight [D, 3D] stored [in, out] (columns q | k | v), bias [3D]."""
    d = cfg.hidden_size
    fused = _fused_qkv(cfg, i, lambda a, j: (a.T if a.ndim == 2 else a)[j * d:(j + 1) * d])
    weight = tuple(dataclasses.replace(t, hf_shape=(d, 3 * d)) for t in fused["weight"])
    p = f"transformer.h.{i}.attn.c_attn."
    return {p + "weight": weight, p + "bias": fused["bias"]}  # (GPT-2 always has the biases)


def _neox_qkv(cfg: ModelConfig, i: int) -> dict[str, tuple[Target, ...]]:
    """query_key_value: weight [3D, D] / bias [3D] whose rows are [H, 3, Dh] (per head: its q, k, v)."""
    h, dh = cfg.num_heads, cfg.head_dim
    fused = _fused_qkv(cfg, i, lambda a, j: a.reshape(h, 3, dh, *a.shape[1:])[:, j].reshape(h * dh, *a.shape[1:]))
    p = f"gpt_neox.layers.{i}.attention.query_key_value."
    return {p + "weight": fused["weight"], **({p + "bias": fused["bias"]} if cfg.attention_bias else {})}


def _falcon_qkv(cfg: ModelConfig, i: int) -> dict[str, tuple[Target, ...]]:
    """query_key_value: weight [(H + 2K) * Dh, D] / bias [(H + 2K) * Dh] whose rows are [K, H / K + 2, Dh]."""
    d, h, kh, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    rows, attn = (h + 2 * kh) * dh, ("layers", i, "self_attn")

    def split(a, j):  # part j (0 q, 1 k, 2 v) as an [out, ...] array
        grouped = a.reshape(kh, h // kh + 2, dh, *a.shape[1:])
        part = grouped[:, :-2] if j == 0 else grouped[:, -3 + j]
        return part.reshape(-1, *a.shape[1:])
    heads = (h, kh, kh)
    names = (("q_proj", "q_bias"), ("k_proj", "k_bias"), ("v_proj", "v_bias"))
    p = f"transformer.h.{i}.self_attention.query_key_value."
    m = {p + "weight": tuple(Target((*attn, w), (rows, d), lambda a, j=j: _linear(heads[j], dh)(split(a, j)))
                             for j, (w, _) in enumerate(names))}
    if cfg.attention_bias:
        m[p + "bias"] = tuple(Target((*attn, b), (rows,), lambda a, j=j: split(a, j).reshape(heads[j], dh))
                              for j, (_, b) in enumerate(names))
    return m


def _per_head_norms(cfg: ModelConfig, i: int) -> dict[str, Target]:
    """StableLM's q/k LayerNorm per head: ``norms.{h}.weight`` [Dh] -> row h of q_norm / k_norm [H, Dh]."""
    m = {}
    for ours, theirs, heads in (("q_norm", "q_layernorm", cfg.num_heads), ("k_norm", "k_layernorm", cfg.num_kv_heads)):
        for h in range(heads):
            m[f"model.layers.{i}.self_attn.{theirs}.norms.{h}.weight"] = Target(
                ("layers", i, "self_attn", ours, "weight"), (cfg.head_dim,), _same, part=h, num_parts=heads, axis=0)
    return m


def classic_family_map(cfg: ModelConfig) -> dict[str, Target | tuple[Target, ...]]:
    """The checkpoint keys of one of these families (module docstring)."""
    if cfg.quantization not in (None, "int8", "fp8") or cfg.quant_from_checkpoint:  # (load-time int8 / fp8 only)
        raise ValueError(f"quantization={cfg.quantization!r} checkpoints of {cfg.architecture} are not supported; "
                         "load the unquantized checkpoint (optionally with quantization='int8' or 'fp8')")
    arch = cfg.architecture
    top, layer_prefix, layer, stored_in_out = _NAMES[arch]
    if arch == FALCON and cfg.norm_placement == "parallel_two":
        layer = {**layer, **_FALCON_TWO_NORMS}
    m: dict[str, Target | tuple[Target, ...]] = {}
    for key, target in llama_family_map(cfg).items():
        if arch in (GPT2, GPT_NEOX, FALCON) and any(f".self_attn.{x}_proj." in key for x in "qkv"):
            continue  # (fused below)
        if arch == STABLELM and (".q_norm." in key or ".k_norm." in key):
            continue  # (per head below)
        if key.startswith("model.norm.") and not cfg.final_norm:
            continue  # (OPT's post-norm checkpoints)
        name = _rename(key, top, layer_prefix, layer)
        m[name] = _stored_in_out(target) if name.endswith(stored_in_out) and name.startswith(layer_prefix) \
            else target
    d, e, v = cfg.hidden_size, cfg.embed_proj_dim or cfg.hidden_size, cfg.vocab_size
    for i in range(cfg.num_layers):
        if arch == GPT2:
            m.update(_gpt2_qkv(cfg, i))
        elif arch == GPT_NEOX:
            m.update(_neox_qkv(cfg, i))
        elif arch == FALCON:
            m.update(_falcon_qkv(cfg, i))
        elif arch == STABLELM and cfg.qk_norm:
            m.update(_per_head_norms(cfg, i))
        elif arch == PHI and cfg.qk_norm:
            for name in ("q", "k"):
                m[f"model.layers.{i}.self_attn.{name}_layernorm.bias"] = Target(
                    ("layers", i, "self_attn", f"{name}_norm", "bias"), (cfg.head_dim,), _same)
    if cfg.position_embedding == "learned":
        key = "transformer.wpe.weight" if arch == GPT2 else "model.decoder.embed_positions.weight"
        m[key] = Target(("positions", "table"), (cfg.max_position_embeddings + cfg.position_offset, d), _same)
    if cfg.lm_head_bias:
        m["lm_head.bias"] = Target(("lm_head_bias",), (v,), _same)
    if cfg.embed_proj_dim:  # OPT: Linear(E -> D) [D, E] and Linear(D -> E) [E, D], no biases
        embed_key = "model.decoder.embed_tokens.weight"
        m[embed_key] = dataclasses.replace(m[embed_key], hf_shape=(v, e))
        m["model.decoder.project_in.weight"] = Target(("project_in",), (d, e), _transpose)
        m["model.decoder.project_out.weight"] = Target(("project_out",), (e, d), _transpose)
        if "lm_head.weight" in m:
            m["lm_head.weight"] = dataclasses.replace(m["lm_head.weight"], hf_shape=(v, e))
    return m


def classic_checkpoint_key(cfg: ModelConfig, name: str) -> str | None:
    """GPT-2 base-model checkpoints (the hub's ``gpt2``) store keys without the ``transformer.`` prefix, OPT's
    base-model ones without ``model.``; None for the causal-mask buffers of older checkpoints."""
    if name.endswith(CLASSIC_IGNORED.get(cfg.architecture, ())):
        return None
    if cfg.architecture == GPT2 and not name.startswith(("transformer.", "lm_head.")):
        return "transformer." + name
    if cfg.architecture == OPT and name.startswith("decoder."):  # (OPT checkpoints of the base OPTModel)
        return "model." + name
    return name

