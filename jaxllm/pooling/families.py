"""The decoder families that pool: every causal LM the generate path serves, in vLLM's pooling forms
(``XModel`` embedders, ``XForSequenceClassification`` classifiers, as vLLM's ``as_embedding_model`` /
``as_seq_cls_model`` convert any causal LM it serves), and the reward models with their own head.
Host-side facts only (no jax)."""

from __future__ import annotations

from typing import Any

# ``*Model`` / ``*ForSequenceClassification`` names whose family differs from the causal LM's name
_FAMILY_ALIASES = {"Gemma3Text": "Gemma3"}  # Gemma3TextModel: the text-only Gemma 3 backbone
# vLLM's architecture-suffix defaults: the conversion a pooling name asks for (longest suffixes first; "Model" last)
_FORMS = (("ForSequenceClassification", "classify"), ("ClassificationModel", "classify"),
          ("ForTextEncoding", "embed"), ("EmbeddingModel", "embed"), ("ForRewardModeling", "reward"),
          ("RewardModel", "reward"), ("Model", "embed"))


# reward models with their own score MLP (vLLM's qwen2_rm): architecture -> the causal LM they extend
REWARD_MODELS = {"Qwen2ForRewardModel": "Qwen2ForCausalLM"}


def decoder_backbone(arch: str) -> str | None:
    """The generate path's causal-LM architecture whose backbone a decoder pooling architecture shares (vLLM's
    conversion of any causal LM it serves: ``XModel`` / ``XForSequenceClassification`` and the other suffixes of
    ``_FORMS`` -> ``XForCausalLM``, or ``XLMHeadModel`` as GPT-2), the architecture itself for a causal LM; None when jaxllm serves no such family."""
    from jaxllm.config import SUPPORTED_ARCHITECTURES

    if arch in SUPPORTED_ARCHITECTURES:
        return arch
    if arch in REWARD_MODELS:
        return REWARD_MODELS[arch]
    for suffix, _ in _FORMS:
        if arch.endswith(suffix):
            family = arch[:-len(suffix)]
            family = _FAMILY_ALIASES.get(family, family)
            for base in (f"{family}ForCausalLM", f"{family}LMHeadModel"):
                if base in SUPPORTED_ARCHITECTURES:
                    return base
    return None


def pooling_form(arch: str) -> str:
    """"classify", "embed" or "reward": what vLLM converts a decoder of this name into by default
    (``XForSequenceClassification`` / ``XClassificationModel``: a classifier, ``XForRewardModeling`` /
    ``XRewardModel``: per-token rewards, anything else: an embedder)."""
    if arch in REWARD_MODELS:
        return "reward"
    return next((form for suffix, form in _FORMS if arch.endswith(suffix)), "embed")


def check_decoder_config(hf: dict[str, Any]) -> None:
    """ValueError for decoder checkpoints the causal paged engine cannot pool: bidirectional attention
    (EmbeddingGemma's ``use_bidirectional_attention``, ``is_causal: false``) and multimodal configs (a
    ``text_config``: Gemma3Model / Gemma3ForSequenceClassification are the vision-language classes)."""
    arch = (hf.get("architectures") or [""])[0]
    if hf.get("use_bidirectional_attention") or hf.get("is_causal") is False:
        raise ValueError(f"{arch} with bidirectional attention (use_bidirectional_attention / is_causal=False) is "
                         "not supported as a pooling model: decoders pool on the causal paged engine")
    if "text_config" in hf:
        raise ValueError(f"{arch} is a multimodal checkpoint; pooling serves text-only decoders (e.g. "
                         "Gemma3TextModel / Gemma3TextForSequenceClassification)")
