"""Memory-bounded pure-jnp ragged paged attention: the CPU path of the engine (and any platform's fallback).

Same math as reference.py, but query tokens are processed in chunks of ``token_chunk`` (lax.map) and keys in
groups of ``key_chunk`` cache slots (online softmax), so the gathered K/V is [token_chunk, key_chunk, K, D]
instead of the reference's [T, ctx, K, D]: an 8k-token prefill over an 8k context stays at a few MB per step
instead of tens of GB. The key loop's trip count is data-dependent (a while loop): it covers the groups the chunk's
tokens can see, so a step's cost follows its real context, not the block table's width (max_model_len). Groups
of 128 keys: a decode at a short context gathers little past its end (~15% less CPU time per SmolLM2 decode step
than 512-key groups), and the loop's per-group cost stays small against a long prefill's. With a sliding window each token's key loop starts at the group
of its first visible key and spans only the groups a window can cover: local layers never read pages outside
their window.

Shapes: T tokens, S sequences, P block-table width, Hq q heads, K kv heads, D head dim, BS block size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .kv_cache import dequantize_fp8, kv_scales
from .reference import token_sequence_ids


def key_groups(pos, kv_len, key_len: int, max_groups: int, sliding_window: int | None = None):
    """(group0 [tc], trips []) of one token chunk's key loop: token t reads the key groups group0[t] ..
    (kv_len[t] - 1) // key_len (with a window, group0 is the group holding its first visible key, so pages
    before the window are never read; else 0). ``trips`` is the most groups any token of the chunk reads, at most
    ``max_groups``: a decode at a short context reads a few pages, not max_model_len's, and a chunk of padding
    tokens (kv_len 0) reads none. ``pos`` / ``kv_len``: [tc] int32."""
    group0 = (jnp.zeros_like(pos) if sliding_window is None
              else jnp.maximum(pos - sliding_window + 1, 0) // key_len)
    needed = jnp.where(kv_len > 0, (kv_len - 1) // key_len - group0 + 1, 0)
    return group0, jnp.minimum(jnp.max(needed), max_groups)


def ragged_paged_attention_chunked(
    q: jax.Array,  # [T, Hq, D]
    kv_cache: jax.Array,  # [2, NB, BS, K, D]
    query_start_loc: jax.Array,  # [S + 1] int32
    seq_lens: jax.Array,  # [S] int32
    block_tables: jax.Array,  # [S, P] int32
    *,
    sm_scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    token_chunk: int = 64,
    key_chunk: int = 128,
    k_scale=None,
    v_scale=None,
    sinks: jax.Array | None = None,
) -> jax.Array:
    """Causal ragged paged attention in bounded memory. Returns [T, Hq, D]; padding tokens get zeros.
    A float8 cache is dequantized per gathered key group (fp8 * k_scale / v_scale, as the reference).
    ``sinks`` [Hq] (attention-sink logits, see reference.py): the online softmax starts from the sink (running
    max = sink, running sum = 1), so it joins the denominator and never the output."""
    num_tokens, num_q_heads, head_dim = q.shape
    _, num_blocks, block_size, num_kv_heads, _ = kv_cache.shape
    num_seqs, pages = block_tables.shape
    group = num_q_heads // num_kv_heads
    scales = kv_scales(kv_cache, k_scale, v_scale)
    tc = max(1, min(token_chunk, num_tokens))
    pg = max(1, min(key_chunk // block_size, pages))  # pages per key group
    t_pad = -(-num_tokens // tc) * tc
    p_pad = -(-pages // pg) * pg

    seq_of_token = token_sequence_ids(query_start_loc, num_tokens)
    valid = seq_of_token < num_seqs
    s = jnp.minimum(seq_of_token, num_seqs - 1)
    q_len = query_start_loc[s + 1] - query_start_loc[s]
    pos = seq_lens[s] - q_len + jnp.arange(num_tokens, dtype=jnp.int32) - query_start_loc[s]
    kv_len = jnp.where(valid, jnp.minimum(pos + 1, seq_lens[s]), 0)  # keys [0, kv_len) may be visible

    pad_t = t_pad - num_tokens
    qg = jnp.pad(q, ((0, pad_t), (0, 0), (0, 0))).reshape(t_pad // tc, tc, num_kv_heads, group, head_dim)
    tables = jnp.pad(block_tables, ((0, 0), (0, p_pad - pages)))
    tables = jnp.clip(tables, 0, num_blocks - 1)  # unused entries may hold garbage; masked below
    per_chunk = (
        qg,
        jnp.pad(s, (0, pad_t)).reshape(-1, tc),
        jnp.pad(pos, (0, pad_t)).reshape(-1, tc),
        jnp.pad(kv_len, (0, pad_t)).reshape(-1, tc),
    )
    key_len = pg * block_size
    num_groups = p_pad // pg
    if sliding_window is not None:  # a window of w keys spans at most ceil((w - 1) / key_len) + 1 groups
        num_groups = min(num_groups, -(-(int(sliding_window) - 1) // key_len) + 1)

    def one_chunk(args):
        qc, sc, pc, lc = args  # [tc, K, G, D], [tc], [tc], [tc]
        qf = qc.astype(jnp.float32) * sm_scale

        group0, trips = key_groups(pc, lc, key_len, num_groups, sliding_window)

        def key_group(j, carry):
            acc, m, l = carry
            first = (group0 + j) * pg  # [tc]
            page_ids = jnp.minimum(first[:, None] + jnp.arange(pg, dtype=jnp.int32)[None, :], p_pad - 1)
            blocks = jnp.take_along_axis(tables[sc], page_ids, axis=1)  # [tc, pg]
            kpos = (group0 + j)[:, None] * key_len + jnp.arange(key_len, dtype=jnp.int32)[None, :]
            vis = kpos < lc[:, None]
            if sliding_window is not None:
                vis &= pc[:, None] - kpos < sliding_window
            keys = kv_cache[0][blocks].reshape(tc, key_len, num_kv_heads, head_dim)
            vals = kv_cache[1][blocks].reshape(tc, key_len, num_kv_heads, head_dim)
            if scales is not None:
                keys, vals = dequantize_fp8(keys, scales[0]), dequantize_fp8(vals, scales[1])
            vals = jnp.where(vis[:, :, None, None], vals.astype(jnp.float32), 0.0)
            sco = jnp.einsum("tkgd,tckd->tkgc", qf, keys.astype(jnp.float32))
            if soft_cap is not None:
                sco = soft_cap * jnp.tanh(sco / soft_cap)
            sco = jnp.where(vis[:, None, None, :], sco, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(sco, axis=-1))
            p = jnp.exp(sco - m_new[..., None])
            alpha = jnp.exp(m - m_new)
            acc = acc * alpha[..., None] + jnp.einsum("tkgc,tckd->tkgd", p, vals)
            return acc, m_new, l * alpha + jnp.sum(p, axis=-1)

        if sinks is None:
            m0, l0 = jnp.full(qc.shape[:-1], -1e30, jnp.float32), jnp.zeros(qc.shape[:-1], jnp.float32)
        else:
            m0 = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(num_kv_heads, group), qc.shape[:-1])
            l0 = jnp.ones(qc.shape[:-1], jnp.float32)
        init = (jnp.zeros(qc.shape, jnp.float32), m0, l0)
        acc, _, l = lax.fori_loop(0, trips, key_group, init)
        return acc / jnp.where(l == 0.0, 1.0, l)[..., None]

    out = lax.map(one_chunk, per_chunk)  # [T_pad / tc, tc, K, G, D]
    out = out.reshape(t_pad, num_q_heads, head_dim)[:num_tokens]
    out = jnp.where(valid[:, None, None], out, 0.0)
    return out.astype(q.dtype)
