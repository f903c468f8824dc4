"""Building blocks shared by every architecture: RMSNorm, rotary embeddings, the gated MLP.

Every parameter carries ``logical_axes`` metadata (names from ``jaxllm.parallel.sharding.LOGICAL_RULES``)
so that one rules table decides how it is sharded. Shape letters: T tokens (any leading dims), D model dim,
F ffn dim, H q heads, K kv heads, Dh head dim, V vocab.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxllm.config import ModelConfig, RopeConfig
from jaxllm.models.quant import QuantizedWeight, linear, placeholder_normal
from jaxllm.models.quant_int4 import Int4Weight
from jaxllm.quantization_config import INT4_METHODS


def param(shape, dtype, axes, init: str = "normal", rngs: nnx.Rngs | None = None) -> nnx.Param:
    """A parameter with logical axes. Values are placeholders: real ones come from the loader (zeros when
    ``rngs`` is ``SHAPES_ONLY``)."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = placeholder_normal(rngs, shape).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


def linear_weight(shape, dtype, axes, in_ndim: int, cfg: ModelConfig, rngs: nnx.Rngs):
    """A linear layer's weight [*in_dims, *out_dims] (``in_ndim`` contracted axes): a plain ``param`` in
    ``dtype``, a ``QuantizedWeight`` when ``cfg.quantization`` is "int8"/"fp8", or an ``Int4Weight`` of the
    checkpoint's group size and act order for "awq"/"gptq". Use it with ``linear``."""
    method = cfg.quantization
    if method is None:
        return param(shape, dtype, axes, rngs=rngs)
    if method in INT4_METHODS:
        return Int4Weight(shape, axes, in_ndim, cfg.quant_group_size, cfg.quant_desc_act,
                          impl=cfg.quant_matmul_impl, variant=cfg.int4_kernel_variant)
    return QuantizedWeight(shape, method, axes, in_ndim, rngs, activations=cfg.fp8_activations)


class RMSNorm(nnx.Module):
    """y = w * x / rms(x) over the trailing ``len(shape)`` axes, the rms in float32 like HF.

    Llama casts the normed x back before the scale; with ``offset`` (Gemma: (1 + w)) or ``fp32_scale`` (OLMo 2)
    the scale is applied in float32 and the product cast back, as those families do. ``axes`` are the weight's
    logical axes (a norm over a whole q/k projection is [H, Dh], sharded like the heads)."""

    def __init__(self, dim: int | tuple[int, ...], eps: float, dtype, offset: float = 0.0, fp32_scale: bool = False,
                 axes: tuple = ("norm",)):
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        self.weight = param(shape, dtype, axes, init="ones")
        self.eps = eps
        self.offset = offset
        self.fp32_scale = fp32_scale or offset != 0.0

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        red = tuple(range(-self.weight.ndim, 0))
        var = jnp.mean(x32 * x32, axis=red, keepdims=True)
        normed = x32 * jax.lax.rsqrt(var + self.eps)
        if self.fp32_scale:
            return (normed * (self.offset + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return self.weight[...] * normed.astype(x.dtype)


class LayerNorm(nnx.Module):
    """y = w * (x - mean) / std (+ b) over the trailing ``reduce_ndim`` axes, in float32 and cast back (as
    transformers' Cohere LayerNorm and torch's LayerNorm). The weight may cover more axes than the reduction:
    Cohere's per-head q/k norm has a weight [H, Dh] and normalizes each head over Dh."""

    def __init__(self, shape: tuple[int, ...], eps: float, dtype, bias: bool, axes: tuple, reduce_ndim: int = 1,
                 weight: bool = True, offset: float = 0.0):
        """``weight`` False: no weight and no bias (OLMo 1); ``offset``: scale by (offset + w) (Nemotron's 1)."""
        self.weight = param(shape, dtype, axes, init="ones") if weight else None
        self.bias = param(shape, dtype, axes, init="zeros") if bias and weight else None
        self.eps = eps
        self.reduce_ndim = reduce_ndim
        self.offset = offset

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        red = tuple(range(-self.reduce_ndim, 0))
        centered = x32 - jnp.mean(x32, axis=red, keepdims=True)
        var = jnp.mean(centered * centered, axis=red, keepdims=True)
        out = centered * jax.lax.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * (self.offset + self.weight[...].astype(jnp.float32))
        if self.bias is not None:
            out = out + self.bias[...].astype(jnp.float32)
        return out.astype(x.dtype)


def norm(cfg: ModelConfig, dim, dtype, axes: tuple = ("norm",), bias: bool | None = None) -> RMSNorm | LayerNorm:
    """A norm in the style of ``cfg``'s family: RMSNorm (Gemma's (1 + w); OLMo 2's float32 scale) or LayerNorm
    (``cfg.norm_type == "layer"``: with biases when ``cfg.norm_bias``; a q/k norm of kind "per_head" reduces
    over Dh only; ``bias``: whether a LayerNorm has biases when it differs from ``cfg.norm_bias``)."""
    if cfg.norm_type == "layer":
        shape = (dim,) if isinstance(dim, int) else tuple(dim)
        return LayerNorm(shape, cfg.rms_norm_eps, dtype, cfg.norm_bias if bias is None else bias, axes,
                         weight=cfg.norm_weight, offset=cfg.norm_offset)
    return RMSNorm(dim, cfg.rms_norm_eps, dtype, offset=cfg.norm_offset,
                   fp32_scale=cfg.architecture in ("Olmo2ForCausalLM", "Olmo3ForCausalLM"), axes=axes)


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """[Dh/2] inverse frequencies (float64 numpy, folded into the trace as a constant)."""
    inv = 1.0 / (rope.theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if rope.rope_type == "linear":
        inv = inv / float(rope.get("factor", 1.0))
    elif rope.rope_type == "llama3":
        factor = float(rope.get("factor", 8.0))
        low = float(rope.get("low_freq_factor", 1.0))
        high = float(rope.get("high_freq_factor", 4.0))
        old_len = float(rope.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        low_wavelen, high_wavelen = old_len / low, old_len / high
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(is_medium, smoothed, scaled)
    elif rope.rope_type == "yarn":
        inv = _yarn_inv_freq(inv, rope, head_dim)
    return inv


def _yarn_inv_freq(inv: np.ndarray, rope: RopeConfig, dim: int) -> np.ndarray:
    """YaRN: [Dh/2] frequencies blended between the original ones (fast dims, more than ``beta_fast`` turns over
    the original context) and ones divided by ``factor`` (slow dims, fewer than ``beta_slow`` turns), with a
    linear ramp between them, as transformers' ``_compute_yarn_parameters``."""
    factor = float(rope.get("factor"))
    old_len = float(rope.get("original_max_position_embeddings"))
    beta_fast, beta_slow = float(rope.get("beta_fast") or 32), float(rope.get("beta_slow") or 1)

    def correction_dim(turns: float) -> float:
        return dim * math.log(old_len / (turns * 2 * math.pi)) / (2 * math.log(rope.theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # (transformers' guard against a zero-width ramp)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp  # 1: keep the original frequency, 0: interpolate (divide by factor)
    return inv / factor * (1.0 - extrapolation) + inv * extrapolation


def rope_attention_factor(rope: RopeConfig) -> float:
    """The scale of cos/sin (YaRN's ``attention_factor``, else 0.1 * ln(factor) + 1, or the ratio of the
    ``mscale`` / ``mscale_all_dim`` terms when both are set); 1.0 for the other static rope types."""
    if rope.rope_type != "yarn":
        return 1.0
    if rope.get("attention_factor") is not None:
        return float(rope.get("attention_factor"))
    factor = float(rope.get("factor"))

    def mscale(m: float) -> float:
        return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

    if rope.get("mscale") and rope.get("mscale_all_dim"):
        return mscale(float(rope.get("mscale"))) / mscale(float(rope.get("mscale_all_dim")))
    return mscale(1.0)


def longrope_cos_sin(positions: jax.Array, rope: RopeConfig, dim: int, seq_lens: jax.Array | None):
    """Phi-3 longrope: inverse frequencies divided by ``long_factor`` for a sequence longer than
    ``original_max_position_embeddings`` (its rope length: ``seq_lens`` [...] per token, the whole prompt's
    length during its prefill chunks and the sequence's length after each decode step; else the call's longest
    position + 1, as transformers' per-call switch), else by ``short_factor``; cos/sin times the attention factor
    sqrt(1 + ln(factor) / ln(original max)) (or the config's ``attention_factor``; PhiMoE: ``long_mscale`` /
    ``short_mscale`` by the same length rule). Keys already in the cache keep
    the rotation they were written with, as in transformers' cached generation."""
    old_len = int(rope.get("original_max_position_embeddings"))
    factor = float(rope.get("factor", 1.0))
    scale = rope.get("attention_factor")
    if scale is None:
        scale = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(old_len))
    base = rope.theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    short = jnp.asarray(1.0 / (np.asarray(rope.get("short_factor"), np.float64) * base), jnp.float32)
    long = jnp.asarray(1.0 / (np.asarray(rope.get("long_factor"), np.float64) * base), jnp.float32)
    if seq_lens is None:
        seq_lens = jnp.broadcast_to(jnp.max(positions) + 1, positions.shape)
    inv = jnp.where((seq_lens > old_len)[..., None], long, short)
    angles = positions.astype(jnp.float32)[..., None] * inv
    if rope.get("short_mscale") is not None:  # PhiMoE: the scale follows the length too
        scale = jnp.where(seq_lens > old_len, float(rope.get("long_mscale")), float(rope.get("short_mscale")))[..., None]
    return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def rope_cos_sin(positions: jax.Array, rope: RopeConfig, head_dim: int,
                 seq_lens: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [..., Dh/2] (float32) for integer positions [...] (``head_dim``: the rotated dims).

    "dynamic" (NTK) scaling follows HF: when the sequence is longer than the original context (its rope length:
    ``seq_lens`` [...] per token, as for longrope; else the call's longest position + 1, as transformers' per-call
    update), the base grows with it; below that it is the default rope. Keys already in the cache keep the
    rotation they were written with, as in transformers' cached generation. "longrope": longrope_cos_sin."""
    if rope.rope_type == "longrope":
        return longrope_cos_sin(positions, rope, head_dim, seq_lens)
    inv = jnp.asarray(rope_inv_freq(rope, head_dim), jnp.float32)
    pos = positions.astype(jnp.float32)
    if rope.rope_type == "dynamic":
        factor = float(rope.get("factor", 1.0))
        old_len = float(rope.get("original_max_position_embeddings"))
        if seq_lens is None:
            seq_lens = jnp.broadcast_to(jnp.max(positions) + 1, positions.shape)
        seq_len = jnp.maximum(seq_lens, old_len).astype(jnp.float32)[..., None]
        base = rope.theta * ((factor * seq_len / old_len) - (factor - 1)) ** (head_dim / (head_dim - 2))
        inv = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # [..., Dh/2]
    angles = pos[..., None] * inv
    scale = rope_attention_factor(rope)
    if scale != 1.0:
        return jnp.cos(angles) * scale, jnp.sin(angles) * scale
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, interleaved: bool = False) -> jax.Array:
    """Rotate-half rotary embedding (HF convention). x: [..., heads, Dh]; cos/sin: [..., R/2] rotate the
    leading R dims of each head (R < Dh: partial rotary, the rest passes through). ``interleaved``: frequency i
    rotates the adjacent pair (2i, 2i + 1) instead of (i, i + R/2) (Cohere, GPT-J)."""
    half = cos.shape[-1]
    x32 = x.astype(jnp.float32)
    if interleaved:
        pairs = x32[..., :2 * half].reshape(*x.shape[:-1], half, 2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        c, s = cos[..., None, :], sin[..., None, :]
        rotated = jnp.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(*x.shape[:-1], 2 * half)
        return jnp.concatenate([rotated, x32[..., 2 * half:]], axis=-1).astype(x.dtype)
    x1, x2, rest = x32[..., :half], x32[..., half:2 * half], x32[..., 2 * half:]
    c, s = cos[..., None, :], sin[..., None, :]
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, rest], axis=-1)
    return out.astype(x.dtype)


ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
               "gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu,
               "relu2": lambda x: jnp.square(jax.nn.relu(x))}  # (relu2: Nemotron's squared ReLU)


class GatedMLP(nnx.Module):
    """Gated MLP act(gate) * up (SwiGLU; GeGLU for Gemma) with the gate and up projections fused into one
    [D, 2, F] matmul."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs, intermediate_size: int | None = None):
        """``intermediate_size``: F when it is not ``cfg.intermediate_size`` (Qwen2-MoE's shared expert)."""
        d, f = cfg.hidden_size, intermediate_size or cfg.intermediate_size
        q = cfg
        self.gate_up = linear_weight((d, 2, f), dtype, ("embed", None, "mlp"), 1, q, rngs)
        self.down = linear_weight((f, d), dtype, ("mlp", "embed"), 1, q, rngs)
        self.gate_up_bias = param((2, f), dtype, (None, "mlp"), init="zeros") if cfg.mlp_bias else None
        self.down_bias = param((d,), dtype, ("norm",), init="zeros") if cfg.mlp_bias else None
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: jax.Array, lora=None) -> jax.Array:
        """x [..., D] -> [..., D]. ``lora``: the layer's adapters (jaxllm.models.lora.LayerLoRA) or None."""
        with jax.named_scope("mlp"):
            gu = linear(x, self.gate_up, "...d,dcf->...cf")
            if lora is not None:
                gu = gu + jnp.stack([lora.delta("gate_proj", x), lora.delta("up_proj", x)], axis=-2)
            if self.gate_up_bias is not None:
                gu = gu + self.gate_up_bias[...]
            h = self.act(gu[..., 0, :]) * gu[..., 1, :]
            out = linear(h, self.down, "...f,fd->...d")
            if lora is not None:
                out = out + lora.delta("down_proj", h)
            if self.down_bias is not None:
                out = out + self.down_bias[...]
            return out
