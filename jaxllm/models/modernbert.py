"""ModernBERT (``ModernBertModel`` and the backbone of ``ModernBertForSequenceClassification``) as one Flax NNX
module, run by the encoder runner like the BERT family (same call signature as ``bert.BertModel``).

Bidirectional, pre-LayerNorm (no norm before the first layer's attention), LayerNorms and linear layers without
biases unless ``norm_bias`` / ``attention_bias`` / ``mlp_bias``, rotary positions (no position table), a GeGLU
MLP (``Wi`` -> input, gate; ``act(input) * gate``) and layers alternating global attention with local attention
over a window of ``local_attention // 2`` tokens either side (inclusive), each kind with its own rope base
(``layer_types`` or the older ``global_attn_every_n_layers``). Layers are unrolled Python: local and global
layers differ in their static window, and the encoder is shallow.

Shape letters: B batch, L padded sequence length, D model dim, H heads, Dh head dim, F ffn dim, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import resolve_dtype_name
from jaxllm.config_rope import RopeConfig
from jaxllm.models.bert import _ACTIVATIONS, layer_norm
from jaxllm.models.layers import apply_rope, param, rope_cos_sin

_THETA_DEFAULTS = {"full_attention": 160000.0, "sliding_attention": 10000.0}  # transformers' global / local
_OLD_THETA_KEYS = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Hyper-parameters of a ModernBERT checkpoint (hashable: a static jit argument). The field names the
    encoder runner reads (``num_heads``, ``vocab_size``, ``type_vocab_size``, ``max_model_len``, ``dtype``)
    match ``bert.EncoderConfig``."""

    architecture: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    norm_eps: float
    norm_bias: bool
    attention_bias: bool
    mlp_bias: bool
    hidden_act: str
    window: int  # local layers attend to keys within this distance either side (inclusive)
    sliding: tuple[bool, ...]  # per layer: local (True) or global attention
    rope_theta: tuple[float, ...]  # per layer
    dtype: str = "float32"
    type_vocab_size: int = 1  # (no token types: a pair's second segment is not marked)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_model_len(self) -> int:
        return self.max_position_embeddings

    def num_params(self) -> int:
        d, f = self.hidden_size, self.intermediate_size
        return self.num_layers * (4 * d * d + 3 * d * f) + self.vocab_size * d

    @classmethod
    def from_hf(cls, hf: dict[str, Any], dtype: Any = "auto") -> ModernBertConfig:
        arch = (hf.get("architectures") or [""])[0]
        act = hf.get("hidden_activation", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"hidden_activation={act!r} is not supported for {arch}; supported: "
                             f"{sorted(_ACTIVATIONS)}")
        n = int(hf["num_hidden_layers"])
        if hf["hidden_size"] % hf["num_attention_heads"]:
            raise ValueError(f"hidden_size={hf['hidden_size']} is not a multiple of num_attention_heads="
                             f"{hf['num_attention_heads']}")
        every = int(hf.get("global_attn_every_n_layers", 3))
        types = hf.get("layer_types") or ["sliding_attention" if i % every else "full_attention" for i in range(n)]
        if len(types) != n or set(types) - set(_THETA_DEFAULTS):
            raise ValueError(f"layer_types={types!r}: need {n} of {sorted(_THETA_DEFAULTS)}")
        rope = hf.get("rope_parameters") or {}
        thetas = {}
        for kind, default in _THETA_DEFAULTS.items():
            params = rope.get(kind) or {}
            if params.get("rope_type", "default") != "default":
                raise ValueError(f"{arch}: rope_type={params['rope_type']!r} is not supported (only 'default')")
            thetas[kind] = float(params.get("rope_theta") or hf.get(_OLD_THETA_KEYS[kind]) or default)
        return cls(architecture=arch, vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
                   num_layers=n, num_heads=int(hf["num_attention_heads"]),
                   intermediate_size=int(hf["intermediate_size"]),
                   max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
                   norm_eps=float(hf.get("norm_eps", 1e-5)), norm_bias=bool(hf.get("norm_bias", False)),
                   attention_bias=bool(hf.get("attention_bias", False)), mlp_bias=bool(hf.get("mlp_bias", False)),
                   hidden_act=act, window=int(hf.get("local_attention", 128)) // 2,
                   sliding=tuple(t == "sliding_attention" for t in types),
                   rope_theta=tuple(thetas[t] for t in types),
                   dtype=resolve_dtype_name(dtype, hf.get("dtype") or hf.get("torch_dtype")))


class ModernBertModel(nnx.Module):
    """Parameters in our layout (linear weights [in, ...out]); per-layer ones stacked on axis 0 (N layers).
    LayerNorms are [.., 2, D] (weight, bias; the bias stays 0 without ``norm_bias``); the first layer's
    ``attn_ln`` is unused (that layer has no attention norm)."""

    def __init__(self, cfg: ModernBertConfig, *, dtype=None, rngs: nnx.Rngs | None = None):
        dtype = jnp.dtype(dtype or cfg.dtype)
        rngs = rngs or nnx.Rngs(0)
        n, d, h, dh, f = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
        self.config = cfg
        self.word = param((cfg.vocab_size, d), dtype, ("vocab", "embed"), rngs=rngs)
        self.embed_ln = param((2, d), dtype, (None, "norm"), init="ones")
        self.attn_ln = param((n, 2, d), dtype, (None, None, "norm"), init="ones")
        self.qkv = param((n, d, 3, h, dh), dtype, (None, "embed", None, "q_heads", "head_dim"), rngs=rngs)
        self.qkv_bias = param((n, 3, h, dh), dtype, (None, None, "q_heads", "head_dim"), init="zeros")
        self.o = param((n, h, dh, d), dtype, (None, "q_heads", "head_dim", "embed"), rngs=rngs)
        self.o_bias = param((n, d), dtype, (None, "norm"), init="zeros")
        self.mlp_ln = param((n, 2, d), dtype, (None, None, "norm"), init="ones")
        self.wi = param((n, d, 2, f), dtype, (None, "embed", None, "mlp"), rngs=rngs)  # [.., input | gate, F]
        self.wi_bias = param((n, 2, f), dtype, (None, None, "mlp"), init="zeros")
        self.wo = param((n, f, d), dtype, (None, "mlp", "embed"), rngs=rngs)
        self.wo_bias = param((n, d), dtype, (None, "norm"), init="zeros")
        self.final_ln = param((2, d), dtype, (None, "norm"), init="ones")

    def __call__(self, input_ids, token_type_ids, seq_lens, attention_impl: str | None = None,
                 pooled_row: str | None = None):
        """ids [B, L] int32 (``token_type_ids`` unused: ModernBERT has no token types), seq_lens [B] int32 ->
        hidden [B, L, D], or [B, 1, D] with ``pooled_row`` ("CLS": the first row, "LAST": the last real one)."""
        cfg = self.config
        lens = jnp.maximum(seq_lens, 1).astype(jnp.int32)  # a padding row attends to its first slot, not NaN
        with jax.named_scope("embeddings"):
            x = layer_norm(jnp.take(self.word[...], input_ids, axis=0), self.embed_ln[0], self.embed_ln[1],
                           cfg.norm_eps)
        positions = jnp.arange(input_ids.shape[1])
        ropes = {theta: rope_cos_sin(positions, RopeConfig(theta), cfg.head_dim) for theta in set(cfg.rope_theta)}
        for i in range(cfg.num_layers):
            p = {k: getattr(self, k)[i] for k in ("attn_ln", "qkv", "qkv_bias", "o", "o_bias", "mlp_ln", "wi",
                                                 "wi_bias", "wo", "wo_bias")}
            x = _layer(cfg, i, x, p, ropes[cfg.rope_theta[i]], lens, attention_impl)
        x = layer_norm(x, self.final_ln[0], self.final_ln[1], cfg.norm_eps)
        if pooled_row is None:
            return x
        rows = jnp.zeros_like(lens) if pooled_row == "CLS" else lens - 1
        return jnp.take_along_axis(x, rows[:, None, None], axis=1)


def _layer(cfg: ModernBertConfig, i: int, x, p, rope, lens, attention_impl: str | None):
    """One pre-LN layer ``i``: x [B, L, D] -> [B, L, D]; ``rope``: its (cos, sin) [L, Dh/2]; keys past ``lens``
    [B] (and, on local layers, farther than ``cfg.window``) are masked out. ``attention_impl`` ("cudnn" or None:
    XLA) serves the global layers."""
    with jax.named_scope("attention"):
        y = x if i == 0 else layer_norm(x, p["attn_ln"][0], p["attn_ln"][1], cfg.norm_eps)
        q, k, v = (jnp.einsum("bld,dhk->blhk", y, p["qkv"][:, c]) + p["qkv_bias"][c] for c in range(3))
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # cuDNN's fused kernel takes a window on the left only (causal): local layers attend through XLA
        window = (cfg.window, cfg.window) if cfg.sliding[i] else None
        a = jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lens, key_value_seq_lengths=lens,
                                         scale=cfg.head_dim ** -0.5, local_window_size=window,
                                         implementation=None if cfg.sliding[i] else attention_impl)
        x = x + jnp.einsum("blhk,hkd->bld", a, p["o"]) + p["o_bias"]
    with jax.named_scope("mlp"):
        y = layer_norm(x, p["mlp_ln"][0], p["mlp_ln"][1], cfg.norm_eps)
        up = jnp.einsum("bld,dcf->blcf", y, p["wi"]) + p["wi_bias"]
        h = _ACTIVATIONS[cfg.hidden_act](up[..., 0, :]) * up[..., 1, :]
        return x + jnp.einsum("blf,fd->bld", h, p["wo"]) + p["wo_bias"]
