"""Config fields of more dense decoder families read from a HF ``config.json`` (no jax here): OLMo, GLM, GLM-4,
Nemotron, Cohere2.

``dense_hf`` fills transformers' config-class defaults of the fields a config may leave out (and the values a
family's modeling code fixes whatever the config says), so the shared parsing reads them like any other family;
``dense_family_fields`` gives the ModelConfig fields only these families set:

- OLMo (1): LayerNorms without weight or bias (eps 1e-5), the gated MLP, optional ``clip_qkv`` clamp of q/k/v
  before the rope, all four attention projections biased by ``attention_bias``.
- GLM: partial rotary (``partial_rotary_factor``, default 0.5) in adjacent pairs, q/k/v biases (no o_proj
  bias), the fused ``gate_up_proj``.
- GLM-4: GLM with extra norms after attention (``post_self_attn_layernorm``) and after the MLP
  (``post_mlp_layernorm``): the "sandwich" placement.
- Nemotron: LayerNorm1P (LayerNorm with bias scaling by 1 + w; ``norm_eps``), a plain relu2 MLP up_proj ->
  down_proj (``mlp_bias``), partial rotary in halves (default 0.5), all four projections biased by
  ``attention_bias``.
- Cohere2 (Command R7B / A): Cohere's parallel block from one LayerNorm, interleaved rope and ``logit_scale``, with
  a sliding window on the layers ``layer_types`` marks (default: 3 of every ``sliding_window_pattern`` = 4) and
  the rope on those layers only (the full-attention layers have no positional encoding).
"""

from __future__ import annotations

from typing import Any

OLMO = "OlmoForCausalLM"
GLM = "GlmForCausalLM"
GLM4 = "Glm4ForCausalLM"
NEMOTRON = "NemotronForCausalLM"
COHERE2 = "Cohere2ForCausalLM"
DENSE_ARCHS = (OLMO, GLM, GLM4, NEMOTRON, COHERE2)
DENSE_MODEL_TYPES = {"olmo": OLMO, "glm": GLM, "glm4": GLM4, "nemotron": NEMOTRON, "cohere2": COHERE2}

_GLM_DEFAULTS = {"rms_norm_eps": 1.5625e-07, "max_position_embeddings": 131072, "attention_bias": True,
                 "partial_rotary_factor": 0.5, "num_key_value_heads": 2, "head_dim": 128}
# transformers' config-class defaults of fields a config.json may leave out
_DEFAULTS: dict[str, dict[str, Any]] = {
    OLMO: {"max_position_embeddings": 2048, "tie_word_embeddings": False},
    GLM: _GLM_DEFAULTS,
    GLM4: _GLM_DEFAULTS,
    NEMOTRON: {"norm_eps": 1e-5, "hidden_act": "relu2", "max_position_embeddings": 4096, "partial_rotary_factor": 0.5,
               "tie_word_embeddings": False},
    COHERE2: {"layer_norm_eps": 1e-5, "logit_scale": 0.0625, "tie_word_embeddings": True, "max_position_embeddings": 8192,
              "sliding_window": 4096},
}
# (family name, shared name) pairs: the family's value under the name the shared parsing reads
_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    NEMOTRON: (("norm_eps", "rms_norm_eps"),),
    COHERE2: (("layer_norm_eps", "rms_norm_eps"),),
}
# values the modeling code fixes whatever a config says
_FIXED: dict[str, dict[str, Any]] = {
    OLMO: {"rms_norm_eps": 1e-5},
}


def dense_arch(hf: dict[str, Any]) -> str | None:
    """The family of a config.json dict among these (by ``architectures``, else ``model_type``), or None."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else DENSE_MODEL_TYPES.get(hf.get("model_type", ""))
    return arch if arch in DENSE_ARCHS else None


def dense_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """``hf`` with one of these families' defaults filled in and fixed values set (others: unchanged)."""
    arch = dense_arch(hf)
    if arch is None:
        return hf
    out = dict(hf)
    for key, value in _DEFAULTS[arch].items():
        if out.get(key) is None and not (key == "partial_rotary_factor" and _rope_dict_has(out, key)):
            out[key] = value
    for family_name, shared in _RENAMES.get(arch, ()):
        out[shared] = out[family_name]
    out.update(_FIXED.get(arch, {}))
    return out


def _rope_dict_has(hf: dict[str, Any], key: str) -> bool:
    return (hf.get("rope_parameters") or {}).get(key) is not None


def _positive(hf: dict[str, Any], key: str) -> float | None:
    value = hf.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{key}={value!r} must be a positive number or null")
    return float(value)


def dense_family_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """The ModelConfig fields only these families set (an empty dict for the others)."""
    if arch == OLMO:
        return {"norm_type": "layer", "norm_weight": False, "clip_qkv": _positive(hf, "clip_qkv")}
    if arch in (GLM, GLM4):
        return {"rope_interleaved": True, "attention_out_bias": False,
                "norm_placement": "sandwich" if arch == GLM4 else "pre"}
    if arch == NEMOTRON:
        return {"norm_type": "layer", "norm_bias": True, "norm_offset": 1.0, "mlp_type": "plain"}
    if arch == COHERE2:
        scale = hf.get("logit_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"logit_scale={scale!r} must be a number")
        return {"norm_type": "layer", "norm_placement": "parallel", "rope_interleaved": True,
                "logit_scale": float(scale), "rope_layers": tuple(w is not None for w in _windows(hf, num_layers))}
    return {}


def _layer_types(hf: dict[str, Any], num_layers: int, pattern: int) -> tuple[str, ...]:
    """``layer_types`` when given, else "sliding_attention" on all but every ``sliding_window_pattern``-th layer
    (``pattern`` when absent), as the config classes build them."""
    types = hf.get("layer_types")
    if types is None:
        every = int(hf.get("sliding_window_pattern") or pattern)
        return tuple("sliding_attention" if (i + 1) % every else "full_attention" for i in range(num_layers))
    if len(types) != num_layers:
        raise ValueError(f"layer_types has {len(types)} entries for num_hidden_layers={num_layers}")
    bad = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if bad:
        raise ValueError(f"layer_types {bad} are not supported (only 'sliding_attention', 'full_attention')")
    return tuple(types)


def _windows(hf: dict[str, Any], num_layers: int, pattern: int = 4) -> tuple[int | None, ...]:
    """The window of each layer: ``sliding_window`` on the sliding layers of ``_layer_types``, else None."""
    window = hf.get("sliding_window")
    types = _layer_types(hf, num_layers, pattern)
    return tuple(int(window) if window and t == "sliding_attention" else None for t in types)


def dense_sliding_windows(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[int | None, ...] | None:
    """Per-layer windows of these families (None: another family)."""
    if arch == COHERE2:
        return _windows(hf, num_layers)
    if arch in DENSE_ARCHS:
        return (None,) * num_layers
    return None
