"""Config fields of more dense decoder families read from a HF ``config.json`` (no jax here): OLMo, GLM, GLM-4,
Nemotron, Cohere2, Ernie 4.5, EXAONE 4, OLMo 3, Seed-OSS.

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
- Ernie 4.5 (dense): Llama with interleaved rope over the whole head and ``use_bias`` on every linear layer.
- EXAONE 4: OLMo 2's post-norms with per-head q/k RMSNorm, sliding windows on the layers ``layer_types`` marks
  (default: 3 of every ``sliding_window_pattern``) and, when there is a window, the rope on those layers only.
- OLMo 3: OLMo 2 (post-norms, q/k RMSNorm over the whole projection) with sliding windows on 3 of every 4 layers
  and a rope per layer type (``rope_parameters`` keyed by "full_attention" / "sliding_attention"; a 4.x config's
  ``rope_scaling`` / ``rope_theta`` apply to the full-attention layers, the sliding ones keep 500000).
- Seed-OSS: Llama with q/k/v biases (``attention_bias``), an o_proj bias (``attention_out_bias``), ``mlp_bias``.
"""

from __future__ import annotations

from typing import Any

OLMO = "OlmoForCausalLM"
GLM = "GlmForCausalLM"
GLM4 = "Glm4ForCausalLM"
NEMOTRON = "NemotronForCausalLM"
COHERE2 = "Cohere2ForCausalLM"
ERNIE45 = "Ernie4_5ForCausalLM"
EXAONE4 = "Exaone4ForCausalLM"
OLMO3 = "Olmo3ForCausalLM"
SEED_OSS = "SeedOssForCausalLM"
DENSE_ARCHS = (OLMO, GLM, GLM4, NEMOTRON, COHERE2, ERNIE45, EXAONE4, OLMO3, SEED_OSS)
DENSE_MODEL_TYPES = {"olmo": OLMO, "glm": GLM, "glm4": GLM4, "nemotron": NEMOTRON, "cohere2": COHERE2,
                     "ernie4_5": ERNIE45, "exaone4": EXAONE4, "olmo3": OLMO3, "seed_oss": SEED_OSS}
_OLMO3_THETA = 500_000.0  # (Olmo3Config's default_theta)

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
    ERNIE45: {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "tie_word_embeddings": True, "head_dim": 128,
              "num_key_value_heads": 2, "rope_theta": 500_000.0, "use_bias": False},
    EXAONE4: {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "tie_word_embeddings": False,
              "sliding_window": 4096, "sliding_window_pattern": 4},
    OLMO3: {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "tie_word_embeddings": False,
            "sliding_window": 4096},
    SEED_OSS: {"rms_norm_eps": 1e-6, "max_position_embeddings": 524288, "tie_word_embeddings": False, "head_dim": 128,
               "num_key_value_heads": 8, "attention_bias": True, "attention_out_bias": False, "mlp_bias": False},
}
# (family name, shared name) pairs: the family's value under the name the shared parsing reads
_RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    NEMOTRON: (("norm_eps", "rms_norm_eps"),),
    COHERE2: (("layer_norm_eps", "rms_norm_eps"),),
}
# values the modeling code fixes whatever a config says
_FIXED: dict[str, dict[str, Any]] = {
    OLMO: {"rms_norm_eps": 1e-5},
    EXAONE4: {"attention_bias": False, "mlp_bias": False},
    OLMO3: {"mlp_bias": False},
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
        if key not in out and not (key == "partial_rotary_factor" and _rope_dict_has(out, key)):
            out[key] = value
    for family_name, shared in _RENAMES.get(arch, ()):
        out[shared] = out[family_name]
    if arch == ERNIE45:  # (use_bias: every linear layer)
        out["attention_bias"] = out["mlp_bias"] = bool(out["use_bias"])
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
        windows = dense_sliding_windows(hf, arch, num_layers)
        return {"norm_type": "layer", "norm_placement": "parallel", "rope_interleaved": True,
                "logit_scale": float(scale), "rope_layers": tuple(w is not None for w in windows)}
    if arch == ERNIE45:
        return {"rope_interleaved": True}
    if arch == EXAONE4:
        windows = dense_sliding_windows(hf, arch, num_layers)
        rope = tuple(w is not None for w in windows) if hf.get("sliding_window") else ()
        return {"norm_placement": "post", "qk_norm": "head", "rope_layers": rope}
    if arch == OLMO3:
        if not hf.get("sliding_window") and "sliding_attention" in _layer_types(hf, num_layers, 4):
            raise ValueError(f"{OLMO3}: sliding_window={hf.get('sliding_window')!r} with 'sliding_attention' layers "
                             "is not supported (give a window, or layer_types of full_attention only)")
        return {"norm_placement": "post", "qk_norm": "full"}
    if arch == SEED_OSS:
        return {"attention_out_bias": bool(hf.get("attention_out_bias"))}
    return {}


def checked_layer_types(types: list[str], num_layers: int) -> tuple[str, ...]:
    """A config's ``layer_types``: one "sliding_attention" / "full_attention" per layer, else a ValueError."""
    if len(types) != num_layers:
        raise ValueError(f"layer_types has {len(types)} entries for num_hidden_layers={num_layers}")
    bad = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if bad:
        raise ValueError(f"layer_types {bad} are not supported (only 'sliding_attention', 'full_attention')")
    return tuple(types)


def _layer_types(hf: dict[str, Any], num_layers: int, every: int) -> tuple[str, ...]:
    """``layer_types`` when given, else "sliding_attention" on all but every ``every``-th layer, as the config
    classes build them."""
    types = hf.get("layer_types")
    if types is None:
        return tuple("sliding_attention" if (i + 1) % every else "full_attention" for i in range(num_layers))
    return checked_layer_types(types, num_layers)


def _windows(hf: dict[str, Any], num_layers: int, every: int) -> tuple[int | None, ...]:
    """The window of each layer: ``sliding_window`` on the sliding layers of ``_layer_types``, else None."""
    window = hf.get("sliding_window")
    types = _layer_types(hf, num_layers, every)
    return tuple(int(window) if window and t == "sliding_attention" else None for t in types)


def olmo3_rope_dicts(hf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full-attention rope dict, sliding-attention rope dict) of an OLMo 3 config, as Olmo3Config builds them:
    ``rope_parameters`` per layer type (5.x), or ``rope_scaling`` and ``rope_theta`` for the full-attention layers
    and the default rope of base 500000 for the sliding ones (4.x)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full, local = dict(params.get("full_attention") or {}), dict(params.get("sliding_attention") or {})
    else:
        full, local = {**dict(hf.get("rope_scaling") or {}), **params}, {}
    full.setdefault("rope_theta", hf.get("rope_theta", _OLMO3_THETA))
    local.setdefault("rope_theta", _OLMO3_THETA)
    return full, local


def dense_sliding_windows(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[int | None, ...] | None:
    """Per-layer windows of these families (None: another family)."""
    if arch == COHERE2:  # (Cohere2Config reads a sliding_window_pattern, default 4; Olmo3Config fixes 4)
        return _windows(hf, num_layers, int(hf.get("sliding_window_pattern") or 4))
    if arch == OLMO3:
        return _windows(hf, num_layers, 4)
    if arch == EXAONE4:
        pattern = hf.get("sliding_window_pattern")
        if hf.get("layer_types") is None and (isinstance(pattern, bool) or not isinstance(pattern, int)
                                              or pattern < 1):
            raise ValueError(f"{EXAONE4}: sliding_window_pattern={pattern!r} without layer_types is not supported "
                             "(transformers builds layer_types from a positive integer pattern only)")
        return _windows(hf, num_layers, pattern)
    if arch in DENSE_ARCHS:
        return (None,) * num_layers
    return None
