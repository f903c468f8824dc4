"""Self-attention shared by the dense (research) path and the engine's paged path.

The projection/rope/norm code is one module; only the "attend" step differs and is injected:
``DenseCausalAttention`` for ``model(ids[B, T])`` (no cache) and ``PagedAttention`` for the engine's
flattened ragged batch over the paged KV cache (``jaxllm.ops``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxllm import ops
from jaxllm.config import ModelConfig
from jaxllm.models.layers import apply_rope, linear, linear_weight, norm, param
from jaxllm.models.quant import linears
from jaxllm.ops.paged_attention.kv_cache import is_fp8
from jaxllm.ops.paged_attention.reference import token_sequence_ids
from jaxllm.parallel.sharding import MODEL_AXIS


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class AttentionMetadata:
    """Per-step metadata of a ragged batch (T padded tokens, S padded sequences, P blocks per sequence)."""

    slot_mapping: jax.Array  # [T] int32, cache slot of each new token; -1 for padding tokens
    query_start_loc: jax.Array  # [S + 1] int32, cumulative query lengths (padding sequences repeat the end)
    seq_lens: jax.Array  # [S] int32, tokens in the cache after this step (cached + new); 0 for padding
    block_tables: jax.Array  # [S, P] int32, physical block of each logical block
    # [S] int32, the least length a length-dependent rope (longrope, dynamic NTK) follows: the prompt's length, so
    # every chunk of a prompt is rotated as transformers rotates the whole prompt (a token at position p follows
    # max(rope_lens, p + 1): rope_seq_lens); None: seq_lens
    rope_lens: jax.Array | None = None


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class DenseCausalAttention:
    """Causal attention over the tokens of the call itself: q [B, T, H, Dh], k/v [B, T, K, Dh]. No cache, so the
    KV-cache scales are not used. With ``soft_cap`` the scores go through cap * tanh(s / cap) before the mask, and
    ``sinks`` [H] (gpt-oss) join each head's softmax denominator (a plain jnp softmax: dot_product_attention has
    neither)."""

    def rope_seq_lens(self, positions):
        return None  # one call is one batch of whole sequences: rope switches on the longest position

    def __call__(self, q, k, v, kv_cache, *, sm_scale: float, sliding_window: int | None, kv_scale=None,
                 soft_cap: float | None = None, sinks=None):
        if soft_cap is None and sinks is None:
            window = None if sliding_window is None else (sliding_window - 1, 0)
            out = jax.nn.dot_product_attention(q, k, v, scale=sm_scale, is_causal=True, local_window_size=window)
            return out, kv_cache
        return _dense_soft_capped(q, k, v, sm_scale, sliding_window, soft_cap, sinks), kv_cache


def _dense_soft_capped(q, k, v, sm_scale, sliding_window, soft_cap, sinks=None):
    """q [B, T, H, Dh], k/v [B, T, K, Dh] -> [B, T, H, Dh]: causal (windowed) attention with soft-capped scores
    (soft_cap None: plain) and attention sinks (sinks [H] or None: a softmax column per head with no value)."""
    b, t, h, dh = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, h // kh, dh).astype(jnp.float32)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(jnp.float32)) * sm_scale
    if soft_cap is not None:
        scores = soft_cap * jnp.tanh(scores / soft_cap)
    qpos, kpos = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
    mask = kpos <= qpos
    if sliding_window is not None:
        mask &= qpos - kpos < sliding_window
    scores = jnp.where(mask, scores, -jnp.inf)
    if sinks is None:
        probs = jax.nn.softmax(scores, axis=-1)
    else:
        sink = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, kh, h // kh, 1, 1), (*scores.shape[:-1], 1))
        probs = jax.nn.softmax(jnp.concatenate([scores, sink], axis=-1), axis=-1)[..., :-1]
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(jnp.float32))
    return out.reshape(b, t, h, dh).astype(q.dtype)


def _write_and_attend(q, k, v, kv_cache, md: AttentionMetadata, kv_scale, sinks=None, *, sm_scale, sliding_window,
                      soft_cap, impl):
    """kv_scale: [2] float32 (k, v); used by a float8 cache only (a bf16 cache ignores them, as vLLM does).
    sinks: [H] float32 attention-sink logits of this device's heads, or None."""
    scales = {}
    if is_fp8(kv_cache.dtype):
        scales = {"k_scale": kv_scale[0], "v_scale": kv_scale[1]}
    kv_cache = ops.write_kv_cache(kv_cache, k, v, md.slot_mapping, **scales)
    out = ops.ragged_paged_attention(q, kv_cache, md.query_start_loc, md.seq_lens, md.block_tables,
                                     sm_scale=sm_scale, sliding_window=sliding_window, soft_cap=soft_cap, impl=impl,
                                     sinks=sinks, **scales)
    return out, kv_cache


@functools.partial(jax.tree_util.register_dataclass, data_fields=["metadata"], meta_fields=["impl", "mesh"])
@dataclasses.dataclass(frozen=True)
class PagedAttention:
    """Writes the new K/V into the paged cache, then attends over it (q [T, H, Dh], k/v [T, K, Dh]).

    Under tensor parallelism (a mesh of N > 1 devices) the kernel runs per shard in ``shard_map``: each device
    holds H/N query heads and the cache heads they read. When N > K the cache has N head slots (slot i holds kv
    head i // (N / K), so a device holds exactly the one kv head its query heads use) and the replicated k/v
    projections are sliced per device before the write.

    fp8 KV cache (``kv_cache_dtype="fp8"``): the cache array's float8 dtype selects it; the write quantizes and
    the kernels dequantize with the layer's ``kv_scale`` (calibrated scales from the checkpoint, else 1.0:
    jaxllm.weights.kv_scales)."""

    metadata: AttentionMetadata
    impl: str | None = None
    mesh: Mesh | None = None

    def rope_seq_lens(self, positions: jax.Array) -> jax.Array:
        """[T] the rope length of each token (positions [T]): max(its sequence's ``rope_lens``, position + 1), so
        a prompt's tokens follow the whole prompt and every later token its own length, as transformers' cached
        generation of that sequence alone does (the prompt in one forward, then one token per forward). A chunk
        that recomputes a preempted sequence's prompt and output tokens rotates each of them as first written,
        so its blocks equal the ones the prefix cache keys by the prompt's rope regime."""
        md = self.metadata
        lens = md.seq_lens if md.rope_lens is None else md.rope_lens
        seq = jnp.minimum(token_sequence_ids(md.query_start_loc, positions.shape[-1]), lens.shape[0] - 1)
        return jnp.maximum(lens[seq], positions + 1)

    def __call__(self, q, k, v, kv_cache, *, sm_scale: float, sliding_window: int | None, kv_scale,
                 soft_cap: float | None = None, sinks=None):
        attend = functools.partial(_write_and_attend, sm_scale=sm_scale, sliding_window=sliding_window,
                                   soft_cap=soft_cap, impl=self.impl)
        if self.mesh is None or self.mesh.size == 1:
            return attend(q, k, v, kv_cache, self.metadata, kv_scale, sinks)
        tp, num_kv = self.mesh.size, k.shape[1]
        replicated_kv = num_kv % tp != 0

        def local(q, k, v, kv_cache, md, kv_scale, sinks):
            if replicated_kv:  # this device's query heads all use kv head i // (tp / K)
                j = jax.lax.axis_index(MODEL_AXIS) // (tp // num_kv)
                k = jax.lax.dynamic_slice_in_dim(k, j, 1, axis=1)
                v = jax.lax.dynamic_slice_in_dim(v, j, 1, axis=1)
            return attend(q, k, v, kv_cache, md, kv_scale, sinks)

        heads = P(None, MODEL_AXIS, None)
        kv_spec = P() if replicated_kv else heads
        cache_spec = P(None, None, None, MODEL_AXIS, None)
        sinks_spec = P() if sinks is None else P(MODEL_AXIS)
        return jax.shard_map(local, mesh=self.mesh,
                             in_specs=(heads, kv_spec, kv_spec, cache_spec, P(), P(), sinks_spec),
                             out_specs=(heads, cache_spec), check_vma=False)(
            q, k, v, kv_cache, self.metadata, kv_scale, sinks)


class Attention(nnx.Module):
    """q/k/v projections (+ optional biases, q/k RMSNorm per head or over the whole projection), rotary
    embedding, attend (optionally soft-capped scores, a per-layer sliding window), output projection."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, dtype, rngs: nnx.Rngs):
        d, h, kh, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = cfg
        self.q_proj = linear_weight((d, h, dh), dtype, ("embed", "q_heads", "head_dim"), 1, q, rngs)
        self.k_proj = linear_weight((d, kh, dh), dtype, ("embed", "kv_heads", "head_dim"), 1, q, rngs)
        self.v_proj = linear_weight((d, kh, dh), dtype, ("embed", "kv_heads", "head_dim"), 1, q, rngs)
        self.o_proj = linear_weight((h, dh, d), dtype, ("q_heads", "head_dim", "embed"), 2, q, rngs)
        if cfg.attention_bias:
            self.q_bias = param((h, dh), dtype, ("q_heads", "head_dim"), init="zeros")
            self.k_bias = param((kh, dh), dtype, ("kv_heads", "head_dim"), init="zeros")
            self.v_bias = param((kh, dh), dtype, ("kv_heads", "head_dim"), init="zeros")
        else:
            self.q_bias = self.k_bias = self.v_bias = None
        self.o_bias = param((d,), dtype, ("norm",), init="zeros") if cfg.attention_out_bias else None
        if cfg.qk_norm == "head":
            self.q_norm, self.k_norm = norm(cfg, dh, dtype), norm(cfg, dh, dtype)
        elif cfg.qk_norm in ("full", "per_head"):  # weight [H, Dh] sharded like the heads; "full": over H * Dh
            bias = False if cfg.qk_norm == "per_head" else None  # (Cohere's and StableLM's have no biases)
            self.q_norm = norm(cfg, (h, dh), dtype, ("q_heads", "head_dim"), bias=bias)
            self.k_norm = norm(cfg, (kh, dh), dtype, ("kv_heads", "head_dim"), bias=bias)
        else:
            self.q_norm = self.k_norm = None
        # fp8 KV-cache scales (k, v): 1.0 unless the checkpoint ships calibrated ones (jaxllm.weights.kv_scales)
        self.kv_scale = param((2,), jnp.float32, (None,), init="ones")
        # gpt-oss: a learned attention-sink logit per query head (float32), joining the softmax denominator
        self.sinks = param((h,), jnp.float32, ("q_heads",), init="zeros") if cfg.attention_sinks else None
        self.sm_scale = cfg.sm_scale
        self.soft_cap = cfg.attn_logit_softcap
        self.sliding_window = cfg.sliding_windows[layer_idx] if cfg.sliding_windows else None
        self.use_rope = cfg.uses_rope(layer_idx)  # (SmolLM3's no-rope layers)
        self.rope_interleaved = cfg.rope_interleaved  # (Cohere)
        self.clip_qkv = cfg.clip_qkv  # (OLMoE)

    def __call__(self, x, cos, sin, attend, kv_cache, lora=None):
        """x: [..., T, D] -> ([..., T, D], kv_cache). ``lora``: this layer's adapters (models/lora.py; the
        engine's flattened [T, D] path only) or None."""
        with jax.named_scope("qkv"):
            q, k, v = linears(x, (self.q_proj, self.k_proj, self.v_proj), "...d,dhk->...hk")
            if lora is not None:
                q, k, v = q + lora.delta("q_proj", x), k + lora.delta("k_proj", x), v + lora.delta("v_proj", x)
            if self.q_bias is not None:
                q, k, v = q + self.q_bias[...], k + self.k_bias[...], v + self.v_bias[...]
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.clip_qkv is not None:
                q, k, v = (jnp.clip(t, -self.clip_qkv, self.clip_qkv) for t in (q, k, v))
            if self.use_rope:
                q, k = (apply_rope(t, cos, sin, self.rope_interleaved) for t in (q, k))
        with jax.named_scope("attend"):
            sinks = {} if self.sinks is None else {"sinks": self.sinks[...]}  # (attends without sinks: MLA's)
            out, kv_cache = attend(q, k, v, kv_cache, sm_scale=self.sm_scale, sliding_window=self.sliding_window,
                                   kv_scale=self.kv_scale[...], soft_cap=self.soft_cap, **sinks)
        with jax.named_scope("o_proj"):
            projected = linear(out, self.o_proj, "...hk,hkd->...d")
            out = projected if lora is None else projected + lora.delta("o_proj", out)
            if self.o_bias is not None:
                out = out + self.o_bias[...]
            return out, kv_cache
