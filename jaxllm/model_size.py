"""How many weights a model has and how many bytes they take in HBM, from its ModelConfig (plain Python, no
jax): the speculation rule's step costs (``jaxllm.spec_decode.cost``) and the benchmark roofline
(``jaxllm.bench.roofline``) count the same way."""

from __future__ import annotations

from jaxllm.config import ModelConfig
from jaxllm.config_deepseek import mla_linear_params
from jaxllm.quantization_config import INT4_GROUP_SIZE


def linear_weight_bytes(quantization: str | None, dtype_bytes: int = 2, group_size: int = INT4_GROUP_SIZE) -> float:
    """HBM bytes per element of a decoder-layer linear weight: the dtype, 1 for int8/fp8 (+ a float32 scale per
    output channel, negligible), 0.5 for 4-bit AWQ/GPTQ plus one float16 scale and one int8 zero point per
    ``group_size`` weights."""
    if quantization is None:
        return dtype_bytes
    if quantization in ("int8", "fp8"):
        return 1
    if quantization in ("awq", "gptq"):
        return 0.5 + 3 / group_size
    raise ValueError(f"no weight size for quantization={quantization!r}")


def config_linear_weight_bytes(cfg: ModelConfig, dtype_bytes: int) -> float:
    """``linear_weight_bytes`` of ``cfg``'s quantization and group size. A GPTQ checkpoint with one group per
    output channel (``quant_group_size`` -1: a group of all K inputs, K >= INT4_GROUP_SIZE in practice) counts
    as INT4_GROUP_SIZE groups, which bounds its scale bytes from above."""
    group = cfg.quant_group_size if cfg.quant_group_size > 0 else INT4_GROUP_SIZE
    return linear_weight_bytes(cfg.quantization, dtype_bytes, group)


def linear_param_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(decoder-layer linear weights, of which MoE experts): q/k/v/o, dense MLPs (gated: 3 matrices, plain: 2),
    every expert's gate/up/down, and Qwen2-MoE's shared experts (dense, not counted as experts)."""
    d, f, heads, dh = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.head_dim
    attn = d * (heads + 2 * cfg.num_kv_heads) * dh + heads * dh * d
    attn = mla_linear_params(cfg) if cfg.kv_lora_rank else attn  # (DeepSeek's latent attention)
    moe_layers = sum(cfg.moe_layers)
    experts = moe_layers * cfg.num_experts * 3 * d * cfg.moe_intermediate_size
    dense = (cfg.num_layers - moe_layers) * (2 if cfg.mlp_type == "plain" else 3) * d * f
    shared = moe_layers * 3 * d * cfg.shared_expert_intermediate_size
    return cfg.num_layers * attn + dense + shared + experts, experts


def weight_bytes(cfg: ModelConfig, dtype_bytes: int, linear_bytes: float) -> float:
    """Bytes one forward step reads when it reads every weight: the decoder layers' linear weights at
    ``linear_bytes`` per element, the rest of the body and the lm_head at ``dtype_bytes`` (the input embedding
    is a gather of a few rows, not counted)."""
    body = cfg.num_params(include_embeddings=False)
    head = cfg.vocab_size * cfg.hidden_size
    linear, _ = linear_param_counts(cfg)
    return (body - linear + head) * dtype_bytes + linear * linear_bytes
