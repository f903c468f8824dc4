"""Model configuration read from a HuggingFace ``config.json``.

``ModelConfig`` is frozen and hashable so it can be a static argument of ``jax.jit``: every field is a
plain scalar, string or tuple. It is built once from the HF dict by ``ModelConfig.from_hf`` and never
changes afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from jaxllm.config_archs import ALL_MOE_ARCHS, SUPPORTED_ARCHITECTURES, shared_names_hf, text_architecture
from jaxllm.config_classic import classic_family_fields
from jaxllm.config_deepseek import deepseek_fields, mla_attention_params, mla_cache_fields
from jaxllm.config_dense import dense_family_fields
from jaxllm.config_gpt_oss import GPT_OSS, gpt_oss_defaults, gpt_oss_fields, gpt_oss_quantization
from jaxllm.config_moe_families import moe2_fields
from jaxllm.quantization_config import check_quantization, quantization_fields

_DTYPE_NAMES = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
}

from jaxllm.config_checks import check_hf_config
from jaxllm.config_families import (
    GEMMA_ARCHS,
    HF_DEFAULTS,
    LAYER_NORMS,
    MOE_ARCHITECTURES,
    attention_biases,
    family_fields,
    moe_fields,
    sliding_windows_from_hf,
)
from jaxllm.config_families_extra import extra_family_fields, renamed_fields
from jaxllm.config_rope import RopeConfig, ropes_from_hf, rotary_dim_from_hf
from jaxllm.structured_outputs.params import StructuredOutputsConfig  # vLLM's import path: vllm.config

# check_hf_config (config_checks) and MOE_ARCHITECTURES (config_families) keep their import path here.
__all__ = ["MOE_ARCHITECTURES", "SUPPORTED_ARCHITECTURES", "ModelConfig", "RopeConfig", "StructuredOutputsConfig",
           "check_hf_config", "resolve_dtype_name"]


def resolve_dtype_name(dtype: Any, config_dtype: str | None) -> str:
    """Map a user dtype ("auto", "bfloat16", jnp dtype, ...) to one of float32/bfloat16/float16.

    "auto" follows the checkpoint's ``torch_dtype``/``dtype``; a float32 checkpoint stays float32, as in vLLM
    (which would pick bf16 on GPU for fp32 checkpoints only when asked)."""
    if dtype is None or dtype == "auto":
        name = config_dtype or "float32"
        name = str(name).replace("torch.", "")
        if name not in _DTYPE_NAMES:
            raise ValueError(f"checkpoint dtype {config_dtype!r} is not supported; use dtype='float32', "
                             "'bfloat16' or 'float16'")
        return _DTYPE_NAMES[name]
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    name = name.replace("torch.", "")
    if name not in _DTYPE_NAMES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose 'auto', 'float32', 'bfloat16' or 'float16'")
    return _DTYPE_NAMES[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (shape letters: V vocab, D hidden, F ffn, H q heads, K kv heads)."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool = False  # q/k/v biases
    attention_out_bias: bool = False  # o_proj bias (Llama/Qwen3 with attention_bias; Qwen2 has none)
    mlp_bias: bool = False
    # q/k norm: None, "head" (per head over Dh: Qwen3, Gemma 3), "full" (over the whole projection: OLMo 2) or
    # "per_head" (over Dh with a weight per head and dim [H, Dh]: Cohere)
    qk_norm: str | None = None
    hidden_act: str = "silu"  # gated MLP activation: "silu", "gelu_tanh" or "gelu"
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + w): 1.0 for Gemma
    embed_scale: bool = False  # embeddings times sqrt(hidden_size) (Gemma)
    # "pre" (Llama), "sandwich" (Gemma 2/3: pre and post norms around attention and MLP), "post" (OLMo 2),
    # "parallel" (Cohere: attention and MLP both read one norm of x and add to x)
    norm_placement: str = "pre"
    norm_type: str = "rms"  # "rms" (RMSNorm) or "layer" (LayerNorm: Starcoder2, Cohere); eps: rms_norm_eps
    norm_bias: bool = False  # LayerNorm biases (Starcoder2)
    norm_weight: bool = True  # False: LayerNorms without weight or bias (OLMo 1's non-parametric norms)
    mlp_type: str = "gated"  # "gated" (act(gate) * up) or "plain" (c_fc -> act -> c_proj: Starcoder2)
    rope_interleaved: bool = False  # rope rotates adjacent dim pairs (2i, 2i + 1) instead of halves (Cohere)
    logit_scale: float = 1.0  # logits times logit_scale (Cohere)
    query_pre_attn_scalar: float | None = None  # attention scale query_pre_attn_scalar ** -0.5 (Gemma 2/3)
    attn_logit_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma 2)
    final_logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap) (Gemma 2)
    # rope of the sliding-window layers when it differs from ``rope`` (Gemma 3's local base frequency)
    rope_local: RopeConfig | None = None
    rotary_dim: int = 0  # leading dims of each head that rotate (partial_rotary_factor * head_dim); 0: all
    fused_checkpoint: bool = False  # the checkpoint has qkv_proj / gate_up_proj (Phi-3): split at load
    # the checkpoint's architecture when it is a multimodal one whose language model this is (its keys carry a
    # prefix; the vision tower's are not loaded: text prompts only)
    multimodal_architecture: str | None = None
    # One entry per layer: None for full attention or the window size in tokens.
    sliding_windows: tuple[int | None, ...] = ()
    dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    quantization: str | None = None  # None or one of QUANTIZATION_METHODS (decoder-layer linear weights)
    quant_group_size: int = 0  # awq/gptq: input channels per (scale, zero) group; -1: one group per channel
    quant_desc_act: bool = False  # gptq act order: groups follow g_idx, not the channel order
    quant_from_checkpoint: bool = False  # fp8: the checkpoint holds fp8 weights + scales (not quantized at load)
    # fp8 checkpoint with block-wise scales [BN, BK] (weight_block_size): dequantized and re-quantized per channel
    # at load (jaxllm.weights.block_fp8); (): none
    quant_block_size: tuple[int, ...] = ()
    # Mixture of experts (Mixtral, Qwen3-MoE; jaxllm.models.moe). E experts of ffn dim moe_intermediate_size, top-k
    # routing; moe_layers[i] says whether layer i is sparse (else a dense MLP of intermediate_size).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False  # renormalize the top-k router probabilities to sum to 1
    moe_layers: tuple[bool, ...] = ()
    # Qwen2-MoE: a dense expert of this ffn dim that every MoE layer also runs, scaled by sigmoid(x @ gate); 0: none
    shared_expert_intermediate_size: int = 0
    # experts split over the devices (vLLM's enable_expert_parallel) instead of their ffn dim
    enable_expert_parallel: bool = False
    # routing variants (jaxllm.models.moe_routing): "softmax" (softmax, top-k), "sparsemixer" (PhiMoE's top-2,
    # thresholded at moe_router_jitter) or "deepseek" (the moe_scoring_func ... fields below); the renormalization
    # divides by the moe_norm_p-norm of the top-k weights (DBRX), its sum clamped at moe_norm_min (Ernie);
    # moe_correction_bias: a per-expert bias [E] added to the probabilities to choose the top k, not to weigh them
    # (Ernie 4.5's and DeepSeek-V3's e_score_correction_bias)
    moe_router: str = "softmax"
    moe_router_jitter: float = 0.0
    moe_norm_p: float = 1.0
    moe_norm_min: float = 0.0
    moe_correction_bias: bool = False
    moe_router_float32: bool = False  # router weight and logits in float32 whatever the dtype (Ernie 4.5, as HF)
    shared_expert_gated: bool = True  # Qwen2-MoE's sigmoid gate on the shared expert (GraniteMoeShared, Ernie: none)
    clip_qkv: float | None = None  # OLMoE: q/k/v clamped to [-clip_qkv, clip_qkv] (after the q/k norms)
    # Granite: embeddings times embedding_multiplier, each block's output times residual_multiplier before the
    # residual add, attention_multiplier as the softmax scale, logits divided by logits_scaling
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    attention_multiplier: float | None = None
    logits_scaling: float = 1.0
    rope_layers: tuple[bool, ...] = ()  # SmolLM3: False for a layer without rotary embedding; (): every layer rotates
    # "rope" or "learned": absolute position embeddings [max_position_embeddings + position_offset, D] added to the
    # token embeddings (GPT-2; OPT, whose table starts at row position_offset = 2)
    position_embedding: str = "rope"
    position_offset: int = 0
    final_norm: bool = True  # a norm after the last layer (OPT's post-norm checkpoints have none)
    lm_head_bias: bool = False  # (Phi)
    embed_proj_dim: int = 0  # OPT: embeddings of this dim projected in to / out of hidden_size (0: none)
    # Kernel choices the layers are built with (EngineArgs: fp8_activations resolved for the device,
    # quant_matmul_impl, int4_kernel_variant; None = the ops' dispatcher decides per call).
    fp8_activations: str = "none"  # "none" (weight-only) or "dynamic" (per-token fp8 activations, W8A8)
    quant_matmul_impl: str | None = None
    int4_kernel_variant: str | None = None
    moe_matmul_impl: str | None = None  # the MoE experts' grouped matmul (ops/grouped_matmul)
    # DeepSeek-V2/V3 (jaxllm.config_deepseek): multi-head latent attention when kv_lora_rank > 0 (q/k heads of
    # qk_nope_head_dim + rotary_dim, v heads of v_head_dim; q_lora_rank 0: one q_proj) and the MoE router's
    # scoring ("softmax" / "sigmoid"), top-k method, expert groups and routed output scale; the shared experts
    # (no gate) have shared_expert_intermediate_size. num_nextn_predict_layers: MTP layers the checkpoint
    # carries after the last layer (not loaded).
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    moe_scoring_func: str = "softmax"
    moe_topk_method: str = "greedy"
    moe_n_group: int = 1
    moe_topk_group: int = 1
    routed_scaling_factor: float = 1.0
    num_nextn_predict_layers: int = 0
    # MLA's cache holds the compressed latent (one 576-wide head) instead of per-head K / V (with_mla_cache)
    mla_latent_cache: bool = False
    # gpt-oss (jaxllm.config_gpt_oss): a learned attention-sink logit per q head; the experts' activation
    # "swiglu" (silu(gate) * up) or "clamped_swiglu" (swiglu_alpha, swiglu_limit: gpt-oss's block, with a router
    # bias and expert biases, jaxllm.models.gpt_oss_moe); MXFP4 experts in the checkpoint (dequantized at load)
    attention_sinks: bool = False
    moe_activation: str = "swiglu"
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    mxfp4_experts: bool = False

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def sm_scale(self) -> float:
        """The attention softmax scale: attention_multiplier (Granite), query_pre_attn_scalar ** -0.5 (Gemma 2/3),
        else head_dim ** -0.5."""
        if self.attention_multiplier is not None:
            return self.attention_multiplier
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def layer_rope(self, layer_idx: int) -> RopeConfig:
        """The rope of one layer: ``rope_local`` on sliding-window layers when set, else ``rope``."""
        if self.rope_local is not None and self.sliding_windows and self.sliding_windows[layer_idx] is not None:
            return self.rope_local
        return self.rope

    def uses_rope(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` rotates q/k (SmolLM3 leaves some layers without rope)."""
        return not self.rope_layers or self.rope_layers[layer_idx]

    def is_moe_layer(self, layer_idx: int) -> bool:
        return bool(self.moe_layers) and self.moe_layers[layer_idx]

    def num_params(self, include_embeddings: bool = True, experts_per_layer: float | None = None) -> int:
        """Parameter count (used by the benchmark roofline and memory planning). ``experts_per_layer``: count
        only that many experts of each MoE layer (``num_experts_per_tok``: the parameters active per token)."""
        d, f, dh = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * (self.num_heads + 2 * self.num_kv_heads) * dh + self.num_heads * dh * d
        attn = mla_attention_params(self) if self.kv_lora_rank else attn
        qk_norms = {"head": 2 * dh, "full": (self.num_heads + self.num_kv_heads) * dh,
                    "per_head": (self.num_heads + self.num_kv_heads) * dh}.get(self.qk_norm, 0)
        experts = self.num_experts if experts_per_layer is None else experts_per_layer
        total = d
        for i in range(self.num_layers):
            if self.is_moe_layer(i):
                mlp = d * self.num_experts + experts * 3 * d * self.moe_intermediate_size  # router + experts
                if self.shared_expert_intermediate_size:  # its gate [D, 1] (when gated) and gated MLP
                    mlp += d * self.shared_expert_gated + 3 * d * self.shared_expert_intermediate_size
            else:
                mlp = (2 if self.mlp_type == "plain" else 3) * d * f
            total += attn + mlp + len(LAYER_NORMS[self.norm_placement]) * d + qk_norms
        if self.position_embedding == "learned":  # (GPT-2, OPT)
            total += (self.max_position_embeddings + self.position_offset) * d
        total = int(total + 2 * d * self.embed_proj_dim)  # (OPT's project_in / project_out)
        if include_embeddings:
            total += self.vocab_size * (self.embed_proj_dim or d) * (1 if self.tie_word_embeddings else 2)
        return total

    def with_expert_parallel(self, enabled: bool) -> ModelConfig:
        """This config with ``enable_expert_parallel`` set (vLLM's keyword); True needs a MoE model."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enable_expert_parallel must be a bool, got {enabled!r}")
        if enabled and not any(self.moe_layers):
            raise ValueError(f"enable_expert_parallel=True but {self.architecture} has no experts (it applies to "
                             f"mixture-of-experts models: {', '.join(ALL_MOE_ARCHS)})")
        return dataclasses.replace(self, enable_expert_parallel=enabled)

    def with_mla_cache(self, attention_backend: str | None) -> ModelConfig:
        """This config with the MLA cache layout that ``attention_backend`` runs (jaxllm.config_deepseek:
        the compressed latent under the jnp implementations, per-head K / V otherwise; other models: itself)."""
        return dataclasses.replace(self, **mla_cache_fields(self, attention_backend))

    @classmethod
    def from_hf(cls, hf: dict[str, Any] | Any, dtype: Any = "auto",
                quantization: str | None = None) -> ModelConfig:
        """Build from a config.json dict (or a transformers PretrainedConfig). ``quantization``: None (the
        checkpoint's quantization_config decides), "int8"/"fp8" (quantize the decoder layers' linear weights at
        load time, or an fp8 checkpoint), "awq"/"gptq" (a 4-bit checkpoint of that format)."""
        if not isinstance(hf, dict):
            hf = hf.to_dict()
        hf, mxfp4, quantization = gpt_oss_quantization(hf, quantization)
        quant_fields = quantization_fields(check_quantization(quantization), hf)
        arch, hf, multimodal = text_architecture(shared_names_hf(hf), quant_fields)
        defaults = gpt_oss_defaults(hf) if arch == GPT_OSS else HF_DEFAULTS.get(arch, {})
        hf = renamed_fields({**defaults, **hf}, arch)
        if hf.get("intermediate_size") is None:
            raise ValueError(f"{arch}: the model config has no 'intermediate_size'")
        num_layers = int(hf["num_hidden_layers"])
        family = {**family_fields(hf, arch), **extra_family_fields(hf, arch, num_layers),
                  **classic_family_fields(hf, arch), **moe2_fields(hf, arch, num_layers),
                  **dense_family_fields(hf, arch, num_layers), **gpt_oss_fields(hf, arch, num_layers)}
        biases = attention_biases(hf, arch)
        biases.update({key: family.pop(key) for key in list(family) if key in biases})  # (StableLM's own)
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        head_dim = int(hf.get("head_dim") or hidden // num_heads)
        rope, rope_local = ropes_from_hf(hf, arch)
        num_kv = int(hf.get("num_key_value_heads") or num_heads)
        if num_heads % num_kv:
            raise ValueError(f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv}")
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        cfg = cls(
            architecture=arch,
            model_type=hf.get("model_type", ""),
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv,
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope=rope,
            rope_local=rope_local,
            rotary_dim=rotary_dim_from_hf(hf, head_dim),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", arch in GEMMA_ARCHS)),  # transformers' defaults
            **biases,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            sliding_windows=family.pop("sliding_windows", None) or sliding_windows_from_hf(hf, arch, num_layers),
            dtype=resolve_dtype_name(dtype, hf.get("dtype") or hf.get("torch_dtype")),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            multimodal_architecture=multimodal,
            mxfp4_experts=mxfp4,
            **family,
            **quant_fields,
            **moe_fields(hf, arch, num_layers),
        )
        deepseek = deepseek_fields(hf, arch, num_layers)  # (DeepSeek: MLA dims and routing; they override)
        return dataclasses.replace(cfg, **deepseek) if deepseek else cfg

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Any = "auto") -> ModelConfig:
        """Read ``config.json`` from a checkpoint folder."""
        cfg_path = os.path.join(os.fspath(path), "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"no config.json in {os.fspath(path)!r}")
        with open(cfg_path) as f:
            return cls.from_hf(json.load(f), dtype=dtype)

