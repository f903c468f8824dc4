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
from jaxllm.models.quant import QuantizedWeight, linear
from jaxllm.models.quant_int4 import Int4Weight
from jaxllm.quantization_config import INT4_METHODS


def param(shape, dtype, axes, init: str = "normal", rngs: nnx.Rngs | None = None) -> nnx.Param:
    """A parameter with logical axes. Values are placeholders: real ones come from the loader."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
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
    """y = w * x / rms(x), computed in float32 like HF (then cast back before the scale)."""

    def __init__(self, dim: int, eps: float, dtype):
        self.weight = param((dim,), dtype, ("norm",), init="ones")
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.weight[...] * normed


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
    return inv


def rope_cos_sin(positions: jax.Array, rope: RopeConfig, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """cos/sin of shape [..., Dh/2] (float32) for integer positions [...].

    "dynamic" (NTK) scaling follows HF: when the longest position seen in this call exceeds the original
    context, the base grows with it; below that it is the default rope."""
    inv = jnp.asarray(rope_inv_freq(rope, head_dim), jnp.float32)
    pos = positions.astype(jnp.float32)
    if rope.rope_type == "dynamic":
        factor = float(rope.get("factor", 1.0))
        old_len = float(rope.get("original_max_position_embeddings"))
        seq_len = jnp.maximum(jnp.max(positions) + 1, old_len).astype(jnp.float32)
        base = rope.theta * ((factor * seq_len / old_len) - (factor - 1)) ** (head_dim / (head_dim - 2))
        inv = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = pos[..., None] * inv
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half rotary embedding (HF convention). x: [..., heads, Dh]; cos/sin: [..., Dh/2]."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    c, s = cos[..., None, :], sin[..., None, :]
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return out.astype(x.dtype)


class GatedMLP(nnx.Module):
    """SwiGLU MLP with the gate and up projections fused into one [D, 2, F] matmul."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        q = cfg
        self.gate_up = linear_weight((d, 2, f), dtype, ("embed", None, "mlp"), 1, q, rngs)
        self.down = linear_weight((f, d), dtype, ("mlp", "embed"), 1, q, rngs)
        self.gate_up_bias = param((2, f), dtype, (None, "mlp"), init="zeros") if cfg.mlp_bias else None
        self.down_bias = param((d,), dtype, ("norm",), init="zeros") if cfg.mlp_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        with jax.named_scope("mlp"):
            gu = linear(x, self.gate_up, "...d,dcf->...cf")
            if self.gate_up_bias is not None:
                gu = gu + self.gate_up_bias[...]
            h = jax.nn.silu(gu[..., 0, :]) * gu[..., 1, :]
            out = linear(h, self.down, "...f,fd->...d")
            if self.down_bias is not None:
                out = out + self.down_bias[...]
            return out
