"""Strict loading of BERT-family safetensors checkpoints into ``jaxllm.models.bert.BertModel``.

Every HF key maps to one slot of our (stacked, [in, ...out]) parameters: a missing, unknown or duplicate key, or
a wrong shape, is an error naming the key. The checkpoint may carry a ``bert.`` / ``roberta.`` prefix (saved from
a task model; a ``*ForSequenceClassification``'s head keys are returned apart), old ``gamma`` / ``beta`` LayerNorm names, BertModel's unused ``pooler`` (sentence embeddings pool
the last hidden states, as sentence-transformers and vLLM do) and a ``position_ids`` buffer; those are accepted.
Weights are assembled on the host (an encoder is small) and placed replicated: encoders run on one device.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxllm.models.bert import BertModel, EncoderConfig
from jaxllm.pooling.heads import BERT_HEAD_KEYS, ROBERTA_HEAD_KEYS

_PREFIXES = ("bert.", "roberta.", "model.")
_OPTIONAL = re.compile(r"^(pooler\.dense\.(weight|bias)|embeddings\.position_ids)$")
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def _targets(cfg: EncoderConfig) -> dict[str, tuple]:
    """HF key -> (our param, index into it, HF shape, HF array -> our slot)."""
    d, h, dh, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    t = {
        "embeddings.word_embeddings.weight": ("word", (), (cfg.vocab_size, d), None),
        "embeddings.position_embeddings.weight": ("position", (), (cfg.max_position_embeddings, d), None),
        "embeddings.token_type_embeddings.weight": ("token_type", (), (cfg.type_vocab_size, d), None),
        "embeddings.LayerNorm.weight": ("embed_ln", (0,), (d,), None),
        "embeddings.LayerNorm.bias": ("embed_ln", (1,), (d,), None),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        for c, name in enumerate(("query", "key", "value")):
            t[f"{p}attention.self.{name}.weight"] = ("qkv", (i, slice(None), c), (d, d), lambda w: w.T.reshape(d, h, dh))
            t[f"{p}attention.self.{name}.bias"] = ("qkv_bias", (i, c), (d,), lambda b: b.reshape(h, dh))
        t[p + "attention.output.dense.weight"] = ("o", (i,), (d, d), lambda w: w.T.reshape(h, dh, d))
        t[p + "attention.output.dense.bias"] = ("o_bias", (i,), (d,), None)
        t[p + "attention.output.LayerNorm.weight"] = ("attn_ln", (i, 0), (d,), None)
        t[p + "attention.output.LayerNorm.bias"] = ("attn_ln", (i, 1), (d,), None)
        t[p + "intermediate.dense.weight"] = ("up", (i,), (f, d), lambda w: w.T)
        t[p + "intermediate.dense.bias"] = ("up_bias", (i,), (f,), None)
        t[p + "output.dense.weight"] = ("down", (i,), (d, f), lambda w: w.T)
        t[p + "output.dense.bias"] = ("down_bias", (i,), (d,), None)
        t[p + "output.LayerNorm.weight"] = ("out_ln", (i, 0), (d,), None)
        t[p + "output.LayerNorm.bias"] = ("out_ln", (i, 1), (d,), None)
    return t


def hf_name(name: str) -> str:
    """A checkpoint key in BertModel's own naming (task-model prefix and TF-era LayerNorm names removed)."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def head_shapes(cfg: EncoderConfig, num_labels: int) -> dict[str, tuple[int, ...]]:
    """HF keys and shapes of a ``*ForSequenceClassification`` head (``num_labels`` > 0), else none."""
    if not num_labels:
        return {}
    d = cfg.hidden_size
    keys = BERT_HEAD_KEYS if cfg.architecture.startswith("Bert") else ROBERTA_HEAD_KEYS
    return dict(zip(keys, ((d, d), (d,), (num_labels, d), (num_labels,))))


def load_bert(path: str | os.PathLike, cfg: EncoderConfig, mesh, num_labels: int = 0):
    """(model of ``cfg`` with the weights of the safetensors folder ``path``, replicated on ``mesh``; the
    classifier head's tensors {HF key: float32 array} of a ``*ForSequenceClassification``, else None)."""
    model = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0)))
    host = host_zeros(model)
    head = read_checkpoint(path, _targets(cfg), head_shapes(cfg, num_labels), host, cfg.architecture, hf_name,
                           _OPTIONAL)
    return place(model, host, mesh), (head or None)


def host_zeros(model) -> dict[str, np.ndarray]:
    """float32 zeros of every parameter's shape of an abstract encoder, to fill on the host."""
    return {k: np.zeros(getattr(model, k).get_value().shape, np.float32) for k in vars(model)
            if isinstance(getattr(model, k), nnx.Param)}


def read_checkpoint(path, targets: dict[str, tuple], heads: dict[str, tuple[int, ...]], host: dict[str, np.ndarray],
                    architecture: str, name_of=lambda raw: raw, optional: re.Pattern | None = None):
    """Fill ``host`` from the safetensors folder ``path``, strictly: each key (as ``name_of`` gives it) is one of
    ``targets`` (-> (our param, index into it, HF shape, HF array -> our slot)), one of the classifier ``heads``
    ({key: shape}; returned as {key: float32 array}) or matches ``optional`` (skipped); a missing, unknown or
    duplicate key or a wrong shape is a WeightLoadError naming it."""
    from jaxllm.weights.loader import WeightLoadError
    from jaxllm.weights.safetensors_reader import iter_checkpoint

    seen, head = {}, {}
    for raw, array, source in iter_checkpoint(path):
        name = name_of(raw)
        if name in seen:
            raise WeightLoadError(f"duplicate key {raw!r} in {source} (already read from {seen[name]})")
        if name not in heads and optional is not None and optional.match(name):
            continue
        want = heads[name] if name in heads else (targets[name][2] if name in targets else None)
        if want is None:
            raise WeightLoadError(f"unexpected key {raw!r} in {source}: {architecture} has no such weight")
        if tuple(array.shape) != want:
            raise WeightLoadError(f"shape mismatch for {raw!r} in {source}: expected {want}, got "
                                  f"{tuple(array.shape)}")
        seen[name] = source
        if name in heads:
            head[name] = np.array(array, np.float32)
            continue
        param_name, index, _, to_ours = targets[name]
        value = np.asarray(array, np.float32)
        host[param_name][index] = value if to_ours is None else to_ours(value)
    check_complete(set(targets) | set(heads), set(seen), architecture)
    return head


def check_complete(wanted: set[str], found: set[str], architecture: str) -> None:
    """WeightLoadError naming the keys of ``wanted`` the checkpoint did not have (strict loading)."""
    from jaxllm.weights.loader import WeightLoadError

    missing = sorted(wanted - found)
    if missing:
        shown = ", ".join(repr(k) for k in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise WeightLoadError(f"checkpoint is missing {len(missing)} key(s) for {architecture}: {shown}")


def place(abstract_model: BertModel, host: dict[str, np.ndarray], mesh) -> BertModel:
    """Fill the abstract model's parameters with ``host`` arrays (cast to the model dtype), replicated."""
    sharding = NamedSharding(mesh, PartitionSpec())
    for name, value in host.items():
        var = getattr(abstract_model, name)
        var.set_value(jax.device_put(value.astype(var.get_value().dtype), sharding))
    return abstract_model


def dummy_params(model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random host values for every parameter of an abstract encoder: N(0, 0.02), LayerNorms (``*_ln``, [.., 2, D]:
    weight, bias) 1 and 0, biases 0."""
    host = {}
    for name in vars(model):
        var = getattr(model, name)
        if not isinstance(var, nnx.Param):
            continue
        shape = var.get_value().shape
        if name.endswith("_ln"):
            value = np.zeros(shape, np.float32)
            value[..., 0, :] = 1.0
        elif name.endswith("bias"):
            value = np.zeros(shape, np.float32)
        else:
            value = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        host[name] = value
    return host


def dummy_bert(cfg: EncoderConfig, mesh, seed: int, num_labels: int = 0):
    """Random weights of the real shapes (``load_format="dummy"``, ``dummy_params``); (model, head tensors or
    None) as ``load_bert``."""
    model = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    host = dummy_params(model, rng)
    head = {k: (0.02 * rng.standard_normal(shape)).astype(np.float32) for k, shape in
            head_shapes(cfg, num_labels).items()}
    return place(model, host, mesh), (head or None)
