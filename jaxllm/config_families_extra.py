"""Per-family ``ModelConfig`` fields of Qwen2-MoE, OLMoE, Granite and SmolLM3 read from a HF ``config.json``
(no jax here; ``config_families`` holds the tables these families share with the others).

- Qwen2-MoE: every MoE layer also runs a dense "shared expert" of ``shared_expert_intermediate_size`` whose
  output is scaled by sigmoid(x @ shared_expert_gate); q/k/v biases follow ``qkv_bias``.
- OLMoE: q/k RMSNorm over the whole projection and an optional ``clip_qkv`` clamp of q/k/v.
- Granite: ``embedding_multiplier`` (embeddings), ``residual_multiplier`` (each block's output before the
  residual add), ``attention_multiplier`` (the softmax scale) and ``logits_scaling`` (logits divided by it).
- SmolLM3: layers listed 0 in ``no_rope_layers`` (default: every ``no_rope_layer_interval``-th) skip the rotary
  embedding; sliding windows only on those layers when ``use_sliding_window``.
- Starcoder2: LayerNorm with bias (``norm_epsilon``), a plain (non-gated) MLP c_fc -> act -> c_proj, every linear
  layer biased by ``use_bias``, a sliding window on every layer.
- Cohere (Command-R): LayerNorm without bias (``layer_norm_eps``), attention and MLP in parallel from one norm,
  interleaved rope (pairs of adjacent dims), logits times ``logit_scale``, optional per-head q/k LayerNorm
  (``use_qk_norm``: a weight per head and dim), tied embeddings.
"""

from __future__ import annotations

from typing import Any

QWEN2_MOE = "Qwen2MoeForCausalLM"
OLMOE = "OlmoeForCausalLM"
GRANITE = "GraniteForCausalLM"
SMOLLM3 = "SmolLM3ForCausalLM"
STARCODER2 = "Starcoder2ForCausalLM"
COHERE = "CohereForCausalLM"

# transformers' config-class defaults of fields a config.json may leave out (see config_families.HF_DEFAULTS)
EXTRA_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    QWEN2_MOE: {"max_position_embeddings": 32768, "sliding_window": 4096, "shared_expert_intermediate_size": 5632,
                "moe_intermediate_size": 1408},
    OLMOE: {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096},
    GRANITE: {},
    SMOLLM3: {"rope_theta": 2_000_000.0, "max_position_embeddings": 32768, "tie_word_embeddings": True},
    STARCODER2: {"norm_epsilon": 1e-5, "use_bias": True, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True,
                 "max_position_embeddings": 4096},
    COHERE: {"layer_norm_eps": 1e-5, "logit_scale": 0.0625, "tie_word_embeddings": True, "max_position_embeddings": 8192,
             "rope_theta": 500_000.0},
}


def renamed_fields(hf: dict[str, Any], arch: str) -> dict[str, Any]:
    """``hf`` (defaults merged) with the fields Starcoder2 / Cohere name differently under the names the shared
    parsing reads: the norm epsilon as ``rms_norm_eps`` (it is a LayerNorm's epsilon for both) and Starcoder2's
    ``use_bias`` as ``attention_bias`` (all four projections) and ``mlp_bias``."""
    if arch == STARCODER2:
        bias = bool(hf.get("use_bias"))
        return {**hf, "rms_norm_eps": hf.get("norm_epsilon"), "attention_bias": bias, "mlp_bias": bias}
    if arch == COHERE:
        return {**hf, "rms_norm_eps": hf.get("layer_norm_eps")}
    return hf


def _number(hf: dict[str, Any], key: str, default: float, positive: bool = True) -> float:
    value = hf.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and not value > 0):
        raise ValueError(f"{key}={value!r} must be a positive number")
    return float(value)


def smollm3_rope_layers(hf: dict[str, Any], num_layers: int) -> tuple[bool, ...]:
    """True where SmolLM3's layer rotates q/k: ``no_rope_layers`` (1 = rope, 0 = none) when given, else every
    layer but each ``no_rope_layer_interval``-th (default 4: layers 3, 7, ... have no rope)."""
    flags = hf.get("no_rope_layers")
    if flags is None:
        interval = int(hf.get("no_rope_layer_interval") or 4)
        return tuple((i + 1) % interval != 0 for i in range(num_layers))
    if len(flags) != num_layers:
        raise ValueError(f"no_rope_layers has {len(flags)} entries for num_hidden_layers={num_layers}")
    return tuple(bool(f) for f in flags)


def extra_family_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """The ModelConfig fields only these families set (an empty dict for the others)."""
    if arch == QWEN2_MOE:
        return {"shared_expert_intermediate_size": int(hf.get("shared_expert_intermediate_size") or 0)}
    if arch == OLMOE:
        clip = hf.get("clip_qkv")
        return {"clip_qkv": None if clip is None else _number(hf, "clip_qkv", 0.0)}
    if arch == GRANITE:
        return {"embedding_multiplier": _number(hf, "embedding_multiplier", 1.0),
                "residual_multiplier": _number(hf, "residual_multiplier", 1.0),
                "attention_multiplier": _number(hf, "attention_multiplier", 1.0),
                "logits_scaling": _number(hf, "logits_scaling", 1.0)}
    if arch == SMOLLM3:
        return {"rope_layers": smollm3_rope_layers(hf, num_layers)}
    if arch == STARCODER2:
        return {"norm_type": "layer", "norm_bias": True, "mlp_type": "plain"}
    if arch == COHERE:
        return {"norm_type": "layer", "norm_placement": "parallel", "rope_interleaved": True,
                "logit_scale": _number(hf, "logit_scale", 0.0625, positive=False),
                "qk_norm": "per_head" if hf.get("use_qk_norm") else None}
    return {}


def extra_sliding_windows(hf: dict[str, Any], arch: str, num_layers: int) -> tuple[int | None, ...] | None:
    """Per-layer windows of Starcoder2 (every layer), Qwen2-MoE and SmolLM3 (None: another family). The latter window only with
    ``use_sliding_window``, on the layers ``layer_types`` marks "sliding_attention" (when absent: Qwen2-MoE's
    even layers below ``max_window_layers``, SmolLM3's no-rope layers), as transformers builds them."""
    window = hf.get("sliding_window")
    if arch == STARCODER2:
        return (int(window) if window else None,) * num_layers
    if arch not in (QWEN2_MOE, SMOLLM3):
        return None
    if not hf.get("use_sliding_window") or not window:
        return (None,) * num_layers
    types = hf.get("layer_types")
    if types:
        if len(types) != num_layers:
            raise ValueError(f"layer_types has {len(types)} entries for num_hidden_layers={num_layers}")
        sliding = [t == "sliding_attention" for t in types]
    elif arch == QWEN2_MOE:
        max_window_layers = int(hf.get("max_window_layers", 28))
        sliding = [(i + 1) % 2 == 1 and i < max_window_layers for i in range(num_layers)]
    else:
        sliding = [not rope for rope in smollm3_rope_layers(hf, num_layers)]
    return tuple(int(window) if s else None for s in sliding)
