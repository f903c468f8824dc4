"""The EAGLE-1 draft head (``speculative_config={"method": "eagle", "model": PATH}``) and its strict loading.

EAGLE drafts from the target's own features: at position p the head reads the embedding of token p + 1 and the
target's last hidden state at p (after its final norm), fuses them with ``fc`` ([2D] -> [D], embedding first),
runs one (or N) Llama decoder layer(s) over its own paged KV cache and projects the result (no final norm) with
the target's LM head, predicting token p + 2. Its next draft step feeds its own output state back in place of the
target's. The first layer has no input norm (the fused features enter the residual stream as they are).

Checkpoints (e.g. yuhuili/EAGLE-LLaMA3-Instruct-8B): a Llama config.json (``num_hidden_layers`` = the head's
layers) and safetensors with ``fc.weight`` [D, 2D] (``fc.bias`` optional: the reference implementation trains
one), ``layers.N.*`` as a Llama's (no ``layers.0.input_layernorm``), optionally ``lm_head.weight`` (else the
target's LM head is shared); a ``model.`` prefix is accepted. An ``embed_tokens.weight`` (EAGLE-1 checkpoints
carry a copy of the target's) is shape-checked and not loaded: the target's embedding is shared, as vLLM does,
instead of a second [V, D] copy. A missing or unknown key is a ValueError naming it.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.attention import PagedAttention
from jaxllm.models.layers import param, rope_cos_sin
from jaxllm.models.llama import DecoderLayer, _identity
from jaxllm.parallel.sharding import named_sharding, sharding_rules
from jaxllm.weights.loader import WeightLoadError, _fused_shape, _fused_slot
from jaxllm.weights.mappings import Target, llama_family_map

# targets whose final hidden states an EAGLE-1 head reads (the Llama family's dense decoders)
EAGLE_TARGETS = ("LlamaForCausalLM",)
# config.json architectures of EAGLE-1 heads: the reference checkpoints' plain Llama, and vLLM's names
EAGLE_ARCHITECTURES = ("LlamaForCausalLM", "EagleLlamaForCausalLM", "EAGLEModel")


class EagleLayer(DecoderLayer):
    """A Llama decoder layer; layer 0 has no input norm."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, dtype, rngs: nnx.Rngs):
        super().__init__(cfg, layer_idx, dtype, rngs)
        if layer_idx == 0:
            del self.input_layernorm

    def _norms(self):
        return (getattr(self, "input_layernorm", None) or _identity, _identity, self.post_attention_layernorm,
                _identity)


class EagleHead(nnx.Module):
    """``fc_bias``: the checkpoint has ``fc.bias``; ``own_lm_head``: it has its own LM head (else the target's is
    passed in, as its embedding always is)."""

    def __init__(self, cfg: ModelConfig, *, fc_bias: bool = False, own_lm_head: bool = False,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        d, v, dtype = cfg.hidden_size, cfg.vocab_size, jnp.dtype(cfg.dtype)
        self.config = cfg
        self.fc = param((2 * d, d), dtype, (None, "embed"), rngs=rngs)  # [2D (embedding, feature), D]
        self.fc_bias = param((d,), dtype, ("norm",), init="zeros") if fc_bias else None
        self.layers = nnx.List([EagleLayer(cfg, i, dtype, rngs) for i in range(cfg.num_layers)])
        self.lm_head = param((v, d), dtype, ("vocab", "embed"), rngs=rngs) if own_lm_head else None

    def forward_paged(self, input_ids, positions, features, kv_caches, metadata, attention_impl, mesh, embed):
        """ids / positions [T], features [T, D] (the target's hidden state at each position, or the head's own
        output for a draft step), ``embed`` [V, D] (the target's) -> (hidden [T, D], kv_caches)."""
        cfg = self.config
        x = jnp.take(embed, input_ids, axis=0)
        x = jnp.concatenate([x, features.astype(x.dtype)], axis=-1) @ self.fc[...]
        if self.fc_bias is not None:
            x = x + self.fc_bias[...]
        cos, sin = rope_cos_sin(positions, cfg.layer_rope(0), cfg.rotary_dim or cfg.head_dim)
        attend = PagedAttention(metadata, attention_impl, mesh)
        caches = []
        for i, layer in enumerate(self.layers):
            with jax.named_scope(f"eagle_layer_{i}"):
                x, cache = layer(x, cos, sin, attend, kv_caches[i])
            caches.append(cache)
        return x, caches

    def compute_logits(self, hidden, lm_head):
        """hidden [S, D] -> float32 logits [S, V] through ``lm_head`` [V, D] (the target's, unless the head has
        its own)."""
        head = lm_head if self.lm_head is None else self.lm_head[...]
        return jnp.einsum("sd,vd->sv", hidden, head, preferred_element_type=jnp.float32)


def eagle_hf_config(path: str) -> dict:
    """The head's config.json; vLLM's EAGLEModel configs (the head's Llama config nested under "model") are
    unnested, keeping the outer architectures."""
    from jaxllm.model_source import hf_config_dict

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            outer = json.load(f)
    except (OSError, ValueError):
        outer = None
    if not (isinstance(outer, dict) and isinstance(outer.get("model"), dict)):
        return hf_config_dict(path)  # its errors name what is wrong with the file
    truncated = outer.get("truncated_vocab_size")
    if truncated is not None and truncated != outer["model"].get("vocab_size"):
        raise ValueError(f"speculative_config model={path!r}: truncated_vocab_size={truncated} is not supported")
    return {**outer["model"], "architectures": outer.get("architectures")}


def eagle_config(path: str, hf: dict, target: ModelConfig) -> ModelConfig:
    """The head's ModelConfig (the target's dtype): ValueError for a target outside the Llama family, a head that
    is not an EAGLE-1 Llama head, or a hidden size / vocabulary other than the target's."""
    if target.architecture not in EAGLE_TARGETS:
        raise ValueError(f"speculative_config method='eagle' supports targets {list(EAGLE_TARGETS)}, not "
                         f"{target.architecture}")
    archs = hf.get("architectures") or ["LlamaForCausalLM"]
    if archs[0] not in EAGLE_ARCHITECTURES or hf.get("model_type", "llama") != "llama":
        raise ValueError(f"speculative_config model={path!r}: architectures {archs} is not an EAGLE-1 Llama head "
                         f"(supported: {list(EAGLE_ARCHITECTURES)})")
    for key, neutral in (("add_para_norm", False), ("logit_scale", 1.0)):  # HASS heads, scaled logits
        if hf.get(key, neutral) != neutral:
            raise ValueError(f"speculative_config model={path!r}: {key}={hf[key]!r} is not supported")
    hf = {**hf, "architectures": ["LlamaForCausalLM"], "tie_word_embeddings": False}
    cfg = ModelConfig.from_hf(hf, dtype=target.dtype)
    for name in ("hidden_size", "vocab_size"):
        if getattr(cfg, name) != getattr(target, name):
            raise ValueError(f"speculative_config model={path!r}: the EAGLE head's {name} ({getattr(cfg, name)}) "
                             f"differs from the target's ({getattr(target, name)})")
    return cfg


def eagle_key_map(cfg: ModelConfig, names: set[str]) -> dict[str, Target | tuple[Target, ...]]:
    """Checkpoint key (without ``model.``) -> target: a Llama's layer keys without layer 0's input norm, ``fc``,
    and the optional ``fc.bias`` / ``embed_tokens`` / ``lm_head`` that ``names`` holds."""
    d, v = cfg.hidden_size, cfg.vocab_size
    m = {k[len("model."):]: t for k, t in llama_family_map(cfg).items() if k.startswith("model.layers.")}
    del m["layers.0.input_layernorm.weight"]
    m["fc.weight"] = Target(("fc",), (d, 2 * d), lambda w: w.T)
    optional = {"fc.bias": Target(("fc_bias",), (d,), lambda w: w),
                "embed_tokens.weight": Target(("embed",), (v, d), lambda w: w),
                "lm_head.weight": Target(("lm_head",), (v, d), lambda w: w)}
    m.update({k: t for k, t in optional.items() if k in names})
    return m


def _unprefixed(name: str) -> str:
    return name.removeprefix("model.")


def load_eagle_head(path: str, cfg: ModelConfig, mesh, dummy: bool = False) -> EagleHead:
    """The head of the checkpoint folder ``path`` on ``mesh`` (placed by the sharding rules); ``dummy``: random
    weights of its shapes (benchmarks). Strict: a missing, unknown or misshapen key is a WeightLoadError."""
    if dummy:
        return _placed(EagleHead(cfg), cfg, mesh, {})
    from jaxllm.weights.safetensors_reader import SafetensorsFile, checkpoint_files, iter_checkpoint

    names = {_unprefixed(n) for file in checkpoint_files(os.fspath(path)) for n in SafetensorsFile(file).names()}
    targets = eagle_key_map(cfg, names)
    arrays, pending, seen = {}, {}, set()
    for file_key, array, source in iter_checkpoint(os.fspath(path)):
        name = _unprefixed(file_key)
        found = targets.get(name)
        if found is None:
            raise WeightLoadError(f"unexpected key {name!r} in {source}: an EAGLE-1 Llama head has no such weight")
        if name in seen:
            raise WeightLoadError(f"duplicate key {name!r} in {source}")
        seen.add(name)
        for target in found if isinstance(found, tuple) else (found,):
            if tuple(array.shape) != target.hf_shape:
                raise WeightLoadError(f"shape mismatch for {name!r} in {source}: expected {target.hf_shape}, "
                                      f"got {tuple(array.shape)}")
            if target.path != ("embed",):  # the target's embedding is shared
                _take(target, np.asarray(target.to_ours(np.asarray(array))), arrays, pending)
    missing = sorted(set(targets) - seen)
    if missing:
        raise WeightLoadError(f"EAGLE checkpoint {os.fspath(path)!r} is missing key(s): {missing[:8]}")
    head = EagleHead(cfg, fc_bias="fc.bias" in names, own_lm_head="lm_head.weight" in names)
    return _placed(head, cfg, mesh, arrays)


def _take(target: Target, ours: np.ndarray, arrays: dict, pending: dict) -> None:
    """Record one target's array; a fused parameter's part waits in ``pending`` for its others."""
    if target.part is None:
        arrays[target.path] = ours
        return
    num_parts, axes, part = target.fused()
    fused, filled = pending.setdefault(target.path, (np.empty(_fused_shape(ours.shape, num_parts, axes),
                                                              ours.dtype), set()))
    fused[_fused_slot(num_parts, axes, part, fused.ndim)] = ours
    filled.add(part)
    if len(filled) == int(np.prod(num_parts)):
        arrays[target.path] = fused


def _placed(head: EagleHead, cfg: ModelConfig, mesh, arrays: dict) -> EagleHead:
    """Every parameter of ``head`` on ``mesh`` by its logical axes: the checkpoint's array of its path, or (not
    in ``arrays``: dummy weights) its own placeholder values."""
    graphdef, state = nnx.split(head)
    rules = sharding_rules(cfg, mesh.devices.size)
    flat = nnx.to_flat_state(state)
    for path, var in flat:
        value = arrays.get(tuple(path), var.get_value())
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], rules)
        var.set_value(jax.device_put(jnp.asarray(value, var.get_value().dtype), sharding))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))

