"""Architecture name (HF ``architectures[0]``) -> model class."""

from __future__ import annotations

from jaxllm.config import SUPPORTED_ARCHITECTURES, ModelConfig
from jaxllm.config_deepseek import DEEPSEEK_ARCHS
from jaxllm.models.deepseek import DeepseekForCausalLM
from jaxllm.models.llama import LlamaForCausalLM

MODEL_CLASSES = {name: LlamaForCausalLM for name in SUPPORTED_ARCHITECTURES}
MODEL_CLASSES.update({name: DeepseekForCausalLM for name in DEEPSEEK_ARCHS})


def model_class(cfg: ModelConfig):
    try:
        return MODEL_CLASSES[cfg.architecture]
    except KeyError:
        raise ValueError(f"architecture {cfg.architecture!r} is not supported; supported architectures: "
                         f"{', '.join(sorted(MODEL_CLASSES))}") from None
