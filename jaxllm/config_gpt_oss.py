"""``ModelConfig`` fields of OpenAI's gpt-oss (``GptOssForCausalLM``) read from a HF ``config.json`` (no jax).

- Attention: q/k/v/o biases (``attention_bias``, default true), a learned attention-sink logit per query head
  (``sinks``: joins the softmax denominator, never the output), ``layer_types`` alternating
  "sliding_attention" (window ``sliding_window``, 128) and "full_attention" (transformers' default when the list
  is missing: even layers slide), yarn rope (rope_theta 150000, factor 32 over 4096 positions, truncate false).
- MoE on every layer: a router with a bias ([E, D] + [E]); softmax over the top-k logits (= the top-k
  probabilities renormalized); experts with biases and the clamped SwiGLU
  ``(clip(up, -limit, limit) + 1) * g * sigmoid(alpha * g)`` with g = min(gate, limit) (``swiglu_alpha`` 1.702,
  ``swiglu_limit`` 7.0).
- The released checkpoints store the experts in MXFP4 (``quantization_config.quant_method == "mxfp4"``):
  ``*_blocks`` (uint8, two e2m1 values a byte) and ``*_scales`` (e8m0), dequantized at load
  (jaxllm.weights.mxfp4). The config then carries ``mxfp4_experts=True`` and no quantization method.
"""

from __future__ import annotations

from typing import Any

GPT_OSS = "GptOssForCausalLM"
GPT_OSS_MODEL_TYPES = {"gpt_oss": GPT_OSS}

# GptOssConfig's defaults of fields a config.json may leave out (see config_families.HF_DEFAULTS)
GPT_OSS_HF_DEFAULTS: dict[str, Any] = {
    "num_local_experts": 128, "num_experts_per_tok": 4, "sliding_window": 128, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072, "attention_bias": True, "swiglu_alpha": 1.702, "swiglu_limit": 7.0,
    "head_dim": 64, "tie_word_embeddings": False,
}
# GptOssConfig's rope when a config.json has neither ``rope_parameters`` nor (transformers 4.x) ``rope_scaling``
GPT_OSS_ROPE = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                "truncate": False, "original_max_position_embeddings": 4096}


def gpt_oss_defaults(hf: dict[str, Any]) -> dict[str, Any]:
    """The defaults to merge under ``hf`` (its own rope, in either spelling, wins over GptOssConfig's)."""
    if hf.get("rope_parameters") or hf.get("rope_scaling"):
        return GPT_OSS_HF_DEFAULTS
    return {**GPT_OSS_HF_DEFAULTS, "rope_parameters": {**GPT_OSS_ROPE, "rope_theta": hf.get("rope_theta", 150000.0)}}


def gpt_oss_quantization(hf: dict[str, Any], quantization: Any = None) -> tuple[dict[str, Any], bool, Any]:
    """(config without an mxfp4 ``quantization_config``, whether the checkpoint's experts are MXFP4, the
    ``quantization=`` left for the other methods: None for "mxfp4"). An MXFP4 checkpoint of another
    architecture, or quantization="mxfp4" without an MXFP4 checkpoint, is a ValueError naming mxfp4."""
    qcfg = hf.get("quantization_config")
    if not isinstance(qcfg, dict) or str(qcfg.get("quant_method", "")).lower() != "mxfp4":
        if quantization == "mxfp4":
            raise ValueError("quantization='mxfp4' needs an MXFP4 checkpoint (gpt-oss's, quantization_config "
                             "quant_method 'mxfp4'); this config.json has none")
        return hf, False, quantization
    arch = (hf.get("architectures") or [GPT_OSS_MODEL_TYPES.get(hf.get("model_type", ""), "")])[0]
    if arch != GPT_OSS:
        raise ValueError(f"quant_method='mxfp4' checkpoints of {arch or hf.get('model_type')!r} are not supported "
                         f"(MXFP4 experts are dequantized at load for {GPT_OSS} only)")
    rest = None if quantization == "mxfp4" else quantization  # (int8 / fp8: the dequantized experts at load)
    return {k: v for k, v in hf.items() if k != "quantization_config"}, True, rest


def _positive(hf: dict[str, Any], key: str) -> float:
    value = hf.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{GPT_OSS}: {key}={value!r} must be a positive number")
    return float(value)


def gpt_oss_fields(hf: dict[str, Any], arch: str, num_layers: int) -> dict[str, Any]:
    """The ModelConfig fields of gpt-oss (``sliding_windows`` included); {} for the other architectures."""
    if arch != GPT_OSS:
        return {}
    e, k = int(hf.get("num_local_experts") or 0), int(hf.get("num_experts_per_tok") or 0)
    if e < 1 or not 1 <= k <= e:
        raise ValueError(f"{GPT_OSS}: num_local_experts={e} and num_experts_per_tok={k} must satisfy "
                         f"1 <= num_experts_per_tok <= num_local_experts")
    types = hf.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                      for i in range(num_layers)]
    if len(types) != num_layers or not set(types) <= {"sliding_attention", "full_attention"}:
        raise ValueError(f"{GPT_OSS}: layer_types={types!r} must give 'sliding_attention' or 'full_attention' "
                         f"for each of the {num_layers} layers")
    window = hf.get("sliding_window")
    if "sliding_attention" in types and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"{GPT_OSS}: sliding_window={window!r} must be a positive integer")
    return {"num_experts": e, "num_experts_per_tok": k, "moe_intermediate_size": int(hf["intermediate_size"]),
            "moe_layers": (True,) * num_layers, "norm_topk_prob": True,
            "moe_activation": "clamped_swiglu",
            "swiglu_alpha": _positive(hf, "swiglu_alpha"), "swiglu_limit": _positive(hf, "swiglu_limit"),
            "attention_sinks": True,
            "sliding_windows": tuple(int(window) if t == "sliding_attention" else None for t in types)}
