"""Which architecture a HF ``config.json`` is, and its fields under the names the shared parsing reads (no jax
here): the table of supported architectures, the architecture of a ``model_type`` when ``architectures`` is
missing, and ``shared_names_hf``, the one chain of family rewriters that ``check_hf_config`` and
``ModelConfig.from_hf`` both read a config through.
"""

from __future__ import annotations

from typing import Any

from jaxllm.config_classic import CLASSIC_ARCHS, CLASSIC_MODEL_TYPES, classic_hf
from jaxllm.config_deepseek import DEEPSEEK_ARCHS, deepseek_arch, deepseek_hf
from jaxllm.config_dense import DENSE_ARCHS, DENSE_MODEL_TYPES, dense_hf
from jaxllm.config_families import (
    FUSED_ARCHS,
    MOE_ARCHITECTURES,
    TEXT_OF_MULTIMODAL,
    text_config_of_multimodal,
)
from jaxllm.config_gpt_oss import GPT_OSS, GPT_OSS_MODEL_TYPES
from jaxllm.config_moe_families import MOE2_ARCHS, MOE2_MODEL_TYPES, moe_family_hf

# Every mixture-of-experts architecture (the ones ``enable_expert_parallel`` applies to).
ALL_MOE_ARCHS = (*MOE_ARCHITECTURES, *DEEPSEEK_ARCHS, *MOE2_ARCHS, GPT_OSS)

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "Phi3ForCausalLM",
    "Olmo2ForCausalLM",
    *MOE_ARCHITECTURES,
    "GraniteForCausalLM",
    "SmolLM3ForCausalLM",
    "Starcoder2ForCausalLM",
    "CohereForCausalLM",
    *CLASSIC_ARCHS,
    *DEEPSEEK_ARCHS,
    *DENSE_ARCHS,
    *MOE2_ARCHS,
    GPT_OSS,
)

_ARCH_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "granite": "GraniteForCausalLM",
    "smollm3": "SmolLM3ForCausalLM",
    "starcoder2": "Starcoder2ForCausalLM",
    "cohere": "CohereForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
    **CLASSIC_MODEL_TYPES,
    **DENSE_MODEL_TYPES,
    **MOE2_MODEL_TYPES,
    **GPT_OSS_MODEL_TYPES,
}


def shared_names_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """``hf`` with a family's own spellings under the shared names and its config-class defaults filled in (GPT-2's
    n_embd / n_layer, DBRX's nested d_model / ffn_config, the dense families' defaults, DeepSeek's MLA cache
    head_dim and one kv head per head); other families' configs unchanged."""
    hf = dense_hf(moe_family_hf(classic_hf(hf)))
    return deepseek_hf(hf, deepseek_arch(hf))


def text_architecture(hf: dict[str, Any], quant_fields: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(architecture, config, multimodal architecture or None) of a config.json dict: a multimodal checkpoint's
    language model (text prompts only), an architecture from ``model_type`` when ``architectures`` is missing.
    An unsupported architecture, or a pre-quantized 4-bit / fp8 checkpoint of one with fused projections, is a
    ValueError naming it."""
    archs = hf.get("architectures") or []
    multimodal = archs[0] if archs and archs[0] in TEXT_OF_MULTIMODAL else None
    if multimodal:
        hf = text_config_of_multimodal(hf)
        archs = hf["architectures"]
    arch = archs[0] if archs else _ARCH_BY_MODEL_TYPE.get(hf.get("model_type", ""), "")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"architecture {arch or hf.get('model_type')!r} is not supported; supported "
                         f"architectures: {', '.join(SUPPORTED_ARCHITECTURES)}")
    if arch in FUSED_ARCHS and quant_fields.get("quantization") in ("awq", "gptq") or (
            arch in FUSED_ARCHS and quant_fields.get("quant_from_checkpoint")):
        raise ValueError(f"quantization={quant_fields['quantization']!r} checkpoints of {arch} (fused qkv_proj / "
                         "gate_up_proj) are not supported; load the unquantized checkpoint (optionally with "
                         "quantization='int8' or 'fp8')")
    return arch, hf, multimodal
