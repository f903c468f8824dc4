"""Pure-jnp ragged paged attention: the oracle for the GPU kernels and the CPU path of the engine.

Shapes: T query tokens (flattened over sequences), S sequences (padded), P max blocks per sequence,
Hq query heads, K kv heads, D head dim, BS block size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .kv_cache import dequantize_fp8, kv_scales


def token_sequence_ids(query_start_loc: jax.Array, num_tokens: int) -> jax.Array:
    """[T] index of the sequence each flattened query token belongs to (padding tokens get S-1 or beyond).

    Counts the sequence ends <= t ([T, S] compares) instead of a binary search: jnp.searchsorted's default
    loop costs ~150 µs per call on a GPU (one device->host round trip per step), the compares ~nothing."""
    t = jnp.arange(num_tokens, dtype=jnp.int32)
    return jnp.sum(query_start_loc[None, 1:] <= t[:, None], axis=1, dtype=jnp.int32)


def ragged_paged_attention_reference(
    q: jax.Array,  # [T, Hq, D]
    kv_cache: jax.Array,  # [2, NB, BS, K, D]
    query_start_loc: jax.Array,  # [S + 1] int32, cumulative query lengths; padding sequences repeat the end
    seq_lens: jax.Array,  # [S] int32, cached + new tokens of each sequence (0 for padding)
    block_tables: jax.Array,  # [S, P] int32
    *,
    sm_scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    k_scale=None,
    v_scale=None,
    sinks: jax.Array | None = None,  # [Hq] float32 attention-sink logits (gpt-oss), or None
) -> jax.Array:
    """Causal attention of every query token over its own sequence's cached keys. Returns [T, Hq, D].

    ``sinks``: one learned logit per query head that joins the softmax's denominator only (no value row), so a
    head may attend to "nothing": out = sum_c exp(s_c - m) v_c / (exp(sink - m) + sum_c exp(s_c - m)).

    A float8 ``kv_cache`` holds K / k_scale and V / v_scale (scalars, 1.0 if not given; see kv_cache.py): it
    is dequantized explicitly (fp8 * scale in float32) after the gather.

    A query token at position p (p = seq_len - q_len + its index in the chunk) sees keys at positions
    k <= p, and with a sliding window also p - k < window. Outputs of padding tokens are zeros.
    Memory is O(T x P x BS x K x D): meant for tests and CPU, not for long prefills on a GPU."""
    num_tokens, num_q_heads, head_dim = q.shape
    _, _, block_size, num_kv_heads, _ = kv_cache.shape
    num_seqs = seq_lens.shape[0]
    group = num_q_heads // num_kv_heads
    scales = kv_scales(kv_cache, k_scale, v_scale)

    seq_of_token = token_sequence_ids(query_start_loc, num_tokens)  # [T]
    valid_token = seq_of_token < num_seqs
    s = jnp.minimum(seq_of_token, num_seqs - 1)
    q_len = query_start_loc[s + 1] - query_start_loc[s]
    idx_in_chunk = jnp.arange(num_tokens, dtype=jnp.int32) - query_start_loc[s]
    pos = seq_lens[s] - q_len + idx_in_chunk  # [T]

    blocks = block_tables[s]  # [T, P]
    keys = kv_cache[0][blocks]  # [T, P, BS, K, D]
    vals = kv_cache[1][blocks]
    ctx = blocks.shape[1] * block_size
    keys = keys.reshape(num_tokens, ctx, num_kv_heads, head_dim)
    vals = vals.reshape(num_tokens, ctx, num_kv_heads, head_dim)
    if scales is not None:
        keys, vals = dequantize_fp8(keys, scales[0]), dequantize_fp8(vals, scales[1])

    kpos = jnp.arange(ctx, dtype=jnp.int32)
    mask = (kpos[None, :] <= pos[:, None]) & (kpos[None, :] < seq_lens[s][:, None])  # [T, ctx]
    if sliding_window is not None:
        mask &= pos[:, None] - kpos[None, :] < sliding_window
    mask &= valid_token[:, None]

    qg = q.reshape(num_tokens, num_kv_heads, group, head_dim).astype(jnp.float32)
    scores = jnp.einsum("tkgd,tckd->tkgc", qg, keys.astype(jnp.float32)) * sm_scale
    if soft_cap is not None:
        scores = soft_cap * jnp.tanh(scores / soft_cap)
    # Masked positions may hold NaN (poisoned pages): select, never multiply, so NaN cannot leak.
    scores = jnp.where(mask[:, None, None, :], scores, -jnp.inf)
    m = jnp.max(scores, axis=-1, keepdims=True)
    sink = None if sinks is None else sinks.astype(jnp.float32).reshape(1, num_kv_heads, group, 1)
    if sink is not None:
        m = jnp.maximum(m, sink)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    p = jnp.where(mask[:, None, None, :], jnp.exp(scores - m), 0.0)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    if sink is not None:  # padding tokens: no visible key, out stays 0 whatever the sink adds
        denom = denom + jnp.exp(sink - m)
    vals32 = jnp.where(mask[:, :, None, None], vals.astype(jnp.float32), 0.0)
    out = jnp.einsum("tkgc,tckd->tkgd", p, vals32) / jnp.where(denom == 0, 1.0, denom)
    return out.reshape(num_tokens, num_q_heads, head_dim).astype(q.dtype)
