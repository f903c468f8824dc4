"""DeepSeek-V2 / V3 (``DeepseekV2ForCausalLM``, ``DeepseekV3ForCausalLM``): the shared decoder with multi-head
latent attention (jaxllm.models.mla) and DeepSeek's MoE (jaxllm.models.deepseek_moe) in the sparse layers, a dense
gated MLP of ``intermediate_size`` in the first ``first_k_dense_replace`` layers.

Everything else is the Llama path: pre-norm RMSNorm layers, embeddings, final norm, untied lm_head, the dense
``model(ids)`` and paged ``forward_paged`` entry points. cos/sin are computed for the rope dims only
(``cfg.rotary_dim`` = qk_rope_head_dim), YaRN's attention factor included.
"""

from __future__ import annotations

from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.deepseek_moe import DeepseekMoeBlock
from jaxllm.models.layers import GatedMLP, norm
from jaxllm.models.llama import DecoderLayer, LlamaForCausalLM
from jaxllm.models.mla import MLAttention
from jaxllm.quantization_config import LOAD_TIME_METHODS


class DeepseekDecoderLayer(DecoderLayer):
    """input_layernorm -> MLA -> residual; post_attention_layernorm -> dense MLP or DeepSeek MoE -> residual."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, dtype, rngs: nnx.Rngs):  # (no super(): other modules)
        self.placement = "pre"
        self.input_layernorm = norm(cfg, cfg.hidden_size, dtype)
        self.post_attention_layernorm = norm(cfg, cfg.hidden_size, dtype)
        self.self_attn = MLAttention(cfg, layer_idx, dtype, rngs)
        self.mlp = DeepseekMoeBlock(cfg, dtype, rngs) if cfg.is_moe_layer(layer_idx) else GatedMLP(cfg, dtype, rngs)
        self.residual_multiplier = 1.0


class DeepseekForCausalLM(LlamaForCausalLM):
    """DeepSeek-V2 / V3 as served by vLLM (V3's MTP layers are not loaded: jaxllm.weights.mappings_deepseek)."""

    supports_lora = False
    layer_class = DeepseekDecoderLayer

    def __init__(self, cfg: ModelConfig, *, dtype=None, rngs: nnx.Rngs | None = None):
        if cfg.quantization not in (None, *LOAD_TIME_METHODS) or cfg.quant_from_checkpoint:
            raise ValueError(f"{cfg.architecture}: {cfg.quantization!r} checkpoints are not supported for DeepSeek "
                             "models yet; load a bf16 or block-wise fp8 checkpoint (bf16 optionally with "
                             "quantization='fp8' or 'int8')")
        super().__init__(cfg, dtype=dtype, rngs=rngs)
        self.supports_lora = False  # (LoRA targets q/k/v/o projections MLA does not have)
