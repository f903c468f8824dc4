"""Decoder pooling models: the backbone of any causal LM jaxllm serves, from a ``*ForCausalLM`` / ``*Model`` /
``*ForSequenceClassification`` checkpoint, plus the classifier head ``score.weight`` [L, D] when it has one.

The backbone is the generate path's model of the family's causal-LM architecture (``config.decoder_backbone``)
built with tied embeddings and no LM-head bias, so it has no ``lm_head`` (pooling never projects to the
vocabulary; a checkpoint's LM head, ``lm_head.*`` or GPT-NeoX's ``embed_out.*``, is skipped). ``*Model``
checkpoints store the backbone without the family's prefix (``model.``, GPT-2's ``transformer.``, GPT-NeoX's
``gpt_neox.``); it is added here so the generate path's strict key map applies unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.pooling.config import PoolingModelInfo, architecture_of
from jaxllm.pooling.families import REWARD_MODELS, decoder_backbone
from jaxllm.pooling.heads import LinearHead, reward_head

HEAD_KEY = "score.weight"


def backbone_config(hf: dict[str, Any], dtype: Any, quantization: str | None) -> ModelConfig:
    """The ModelConfig of a pooling checkpoint's decoder backbone (its causal-LM family, tied, no lm_head)."""
    base = decoder_backbone(architecture_of(hf))
    cfg = ModelConfig.from_hf({**hf, "architectures": [base]}, dtype=dtype, quantization=quantization)
    return dataclasses.replace(cfg, tie_word_embeddings=True, lm_head_bias=False)


def output_size(cfg: ModelConfig) -> int:
    """The size of the backbone's hidden rows: the model dim, or OPT's projected ``word_embed_proj_dim``."""
    return cfg.embed_proj_dim or cfg.hidden_size


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
    """Where a family's checkpoint keeps what: the backbone's key ``prefix`` ("model.", "transformer.", ...),
    the causal LM's head keys (skipped), its head weight and the input embeddings (LM-head rows of a tied
    checkpoint) by key."""

    prefix: str
    lm_head_keys: frozenset[str]
    lm_head_weight: str
    embed_weight: str

    @classmethod
    def of(cls, backbone: ModelConfig) -> CheckpointLayout:
        """The layout of ``backbone_config``'s family: its head keys are those an untied causal LM with an
        LM-head bias has beyond the backbone's."""
        from jaxllm.weights.mappings import key_map

        ours = key_map(backbone)
        full = dataclasses.replace(backbone, tie_word_embeddings=False, lm_head_bias=True)
        heads = frozenset(set(key_map(full)) - set(ours))
        prefix = next(iter(ours)).split(".", 1)[0] + "."
        if not all(k.startswith(prefix) for k in ours):
            raise ValueError(f"{backbone.architecture}: backbone keys share no prefix; it cannot be pooled")
        embed = next(k for k, t in ours.items() if not isinstance(t, tuple) and t.path == ("embed",))
        return cls(prefix, heads, next(k for k in sorted(heads) if k.endswith(".weight")), embed)

    def renamed(self, tensors, head: dict[str, np.ndarray], want_head: bool, token_ids: list[int] | None = None):
        """The checkpoint's tensors with the backbone under ``prefix``; the classifier head is taken out into
        ``head``, the LM head skipped. With ``token_ids`` (a classifier built from the LM head), the rows of the
        LM head (``lm_head.weight``) and of the input embeddings (``embed_tokens.weight``, the LM head of a tied
        checkpoint) at those ids are kept in ``head`` too."""
        for name, array, source in tensors:
            if name.startswith("score.") and want_head:
                head[name] = np.array(array, np.float32)
                continue
            if name not in self.lm_head_keys and not name.startswith(self.prefix):
                name = self.prefix + name
            if token_ids is not None and name in (self.lm_head_weight, self.embed_weight):
                short = "lm_head.weight" if name == self.lm_head_weight else "embed_tokens.weight"
                head[short] = np.asarray(array)[token_ids].astype(np.float32)
            if name not in self.lm_head_keys:
                yield name, array, source


def load_decoder(path: str, cfg: ModelConfig, info: PoolingModelInfo, mesh, load_format: str, seed: int,
                 token_ids: list[int] | None = None):
    """(backbone model, ``LinearHead`` of ``score.weight`` [L, D] or None) of the checkpoint at ``path``
    (``cfg``: its ``backbone_config``). ``load_format="dummy"``: random weights. ``token_ids``: the ids of
    ``info.classifier_from_token``, whose LM-head rows make the head."""
    from jaxllm.weights.gguf import is_gguf
    from jaxllm.weights.loader import (
        _tensor_source,
        build_dummy_model,
        build_model_from_tensors,
    )

    want_head = info.num_labels > 0
    if load_format == "dummy":
        return build_dummy_model(cfg, mesh, seed), _dummy_head(info, output_size(cfg), seed) if want_head else None
    gguf = is_gguf(path)
    if load_format in ("gguf", "safetensors") and gguf != (load_format == "gguf"):
        raise ValueError(f"load_format={load_format!r} but {path!r} is {'' if gguf else 'not '}a GGUF file")
    found: dict[str, np.ndarray] = {}
    _, tensors = _tensor_source(path)  # a safetensors folder or a GGUF file, in HF names
    layout = CheckpointLayout.of(cfg)
    model = build_model_from_tensors(cfg, layout.renamed(tensors, found, want_head, token_ids), mesh)
    if not want_head:
        return model, None
    if token_ids is not None:
        return model, LinearHead(_head_from_tokens(found, info))
    if info.architecture in REWARD_MODELS:
        return model, reward_head(_checked(found, _reward_shapes(info.num_labels, output_size(cfg)), info))
    return model, LinearHead(_checked(found, {HEAD_KEY: (info.num_labels, output_size(cfg))}, info)[HEAD_KEY])


def _reward_shapes(num_labels: int, d: int) -> dict[str, tuple[int, ...]]:
    return {"score.0.weight": (d, d), "score.0.bias": (d,), "score.2.weight": (num_labels, d),
            "score.2.bias": (num_labels,)}


def _checked(found: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], info: PoolingModelInfo):
    """The head tensors ``shapes`` names, each present with its shape and nothing else under ``score.``."""
    from jaxllm.weights.loader import WeightLoadError

    for key, shape in shapes.items():
        if key not in found:
            raise WeightLoadError(f"checkpoint is missing the classifier head {key!r} for {info.architecture}")
        if found[key].shape != shape:
            raise WeightLoadError(f"shape mismatch for {key!r}: expected {shape}, got {found[key].shape}")
    unknown = sorted(k for k in found if k.startswith("score.") and k not in shapes)
    if unknown:
        raise WeightLoadError(f"unexpected key {unknown[0]!r}: {info.architecture} has no such weight")
    return found


def _dummy_head(info: PoolingModelInfo, d: int, seed: int):
    """Random head weights of the real shapes (``load_format="dummy"``)."""
    rng = np.random.default_rng(seed)
    if info.architecture in REWARD_MODELS:
        return reward_head({k: 0.02 * rng.standard_normal(s) for k, s in _reward_shapes(info.num_labels, d).items()})
    return LinearHead(0.02 * rng.standard_normal((info.num_labels, d)))


def _head_from_tokens(found: dict[str, np.ndarray], info: PoolingModelInfo) -> np.ndarray:
    """The classifier [L, D] from the LM-head rows of the classifier tokens (vLLM's conversions): one label
    ``yes - no`` for "from_2_way_softmax" (sigmoid of it = the 2-way softmax's "yes"), else the rows as they are."""
    from jaxllm.weights.loader import WeightLoadError

    rows = found.get("lm_head.weight", found.get("embed_tokens.weight"))
    if rows is None:
        raise WeightLoadError(f"checkpoint has neither 'lm_head.weight' nor input embeddings to build the "
                              f"{info.architecture} head from classifier_from_token")
    return rows[1:2] - rows[0:1] if info.num_labels == 1 and len(rows) == 2 else rows
