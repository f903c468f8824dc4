"""Random padded ragged batches for the paged-attention tests, and a naive numpy oracle.

A batch: real sequences (then ``pad_seqs`` padding sequences with q_len 0, seq_len 0), their query tokens
flattened (then ``pad_tokens`` padding tokens), each sequence's blocks drawn at random from the pool. Every
cache slot that holds no token of any sequence is NaN, and every block-table entry past a sequence's last block
holds ``garbage`` (by default a block full of NaN), so an out-of-range read shows up as NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Metadata:
    query_start_loc: np.ndarray  # [S + 1] int32
    seq_lens: np.ndarray  # [S] int32
    block_tables: np.ndarray  # [S, P] int32
    slot_used: np.ndarray  # [NB, BS] bool: slots that hold a token of some sequence
    num_real_tokens: int
    num_tokens: int


def make_metadata(rng, q_lens, ctx_lens, *, block_size, pad_seqs=1, pad_tokens=3, extra_pages=1,
                  garbage: int | None = None) -> Metadata:
    """q_lens[i] new tokens of sequence i whose total length (cached + new) is ctx_lens[i]."""
    q_lens = [int(x) for x in q_lens]
    ctx_lens = [int(x) for x in ctx_lens]
    if not all(1 <= q <= c for q, c in zip(q_lens, ctx_lens)):
        raise ValueError(f"need 1 <= q_len <= ctx_len: {list(zip(q_lens, ctx_lens))}")
    num_seqs = len(q_lens) + pad_seqs
    pages = [-(-c // block_size) for c in ctx_lens]
    width = max(pages) + extra_pages
    num_blocks = sum(pages) + 2  # two blocks nobody owns (NaN): the default garbage points at one
    perm = rng.permutation(num_blocks - 1)  # block num_blocks - 1 is never owned
    tables = np.full((num_seqs, width), num_blocks - 1 if garbage is None else garbage, np.int32)
    slot_used = np.zeros((num_blocks, block_size), bool)
    k = 0
    for i, (n, c) in enumerate(zip(pages, ctx_lens)):
        tables[i, :n] = perm[k:k + n]
        k += n
        flat = np.zeros(n * block_size, bool)
        flat[:c] = True
        slot_used[tables[i, :n]] = flat.reshape(n, block_size)
    qsl = np.zeros(num_seqs + 1, np.int32)
    qsl[1:len(q_lens) + 1] = np.cumsum(q_lens)
    qsl[len(q_lens) + 1:] = qsl[len(q_lens)]
    seq_lens = np.zeros(num_seqs, np.int32)
    seq_lens[:len(ctx_lens)] = ctx_lens
    return Metadata(qsl, seq_lens, tables, slot_used, int(qsl[-1]), int(qsl[-1]) + pad_tokens)


@dataclasses.dataclass
class RaggedBatch:
    q: np.ndarray  # [T, Hq, D]
    kv_cache: np.ndarray  # [2, NB, BS, K, D], NaN where no token lives
    meta: Metadata

    def args(self):
        m = self.meta
        return self.q, self.kv_cache, m.query_start_loc, m.seq_lens, m.block_tables


def make_batch(rng, q_lens, ctx_lens, *, num_q_heads=4, num_kv_heads=2, head_dim=64, block_size=16,
               dtype=np.float32, **meta_kw) -> RaggedBatch:
    m = make_metadata(rng, q_lens, ctx_lens, block_size=block_size, **meta_kw)
    nb = m.slot_used.shape[0]
    kv = rng.standard_normal((2, nb, block_size, num_kv_heads, head_dim)).astype(np.float32)
    kv[:, ~m.slot_used] = np.nan
    q = rng.standard_normal((m.num_tokens, num_q_heads, head_dim)).astype(np.float32)
    return RaggedBatch(q.astype(dtype), kv.astype(dtype), m)


def naive_attention(b: RaggedBatch, sm_scale, sliding_window=None, soft_cap=None, sinks=None) -> np.ndarray:
    """Dense causal attention per sequence in float64 over each sequence's K/V rebuilt from its blocks.
    ``sinks`` [Hq]: attention-sink logits, one extra softmax column per head that has no value (gpt-oss).
    Returns [num_real_tokens, Hq, D]."""
    m = b.meta
    _, _, bs, nk, d = b.kv_cache.shape
    hq = b.q.shape[1]
    g = hq // nk
    flat = b.kv_cache.astype(np.float64).reshape(2, -1, nk, d)
    out = np.zeros((m.num_real_tokens, hq, d))
    for s in range(len(m.seq_lens)):
        lo, hi = m.query_start_loc[s], m.query_start_loc[s + 1]
        if hi == lo:
            continue
        n = int(m.seq_lens[s])
        slots = [m.block_tables[s, p // bs] * bs + p % bs for p in range(n)]
        keys, vals = flat[0, slots], flat[1, slots]  # [n, K, D]
        qs = b.q[lo:hi].astype(np.float64)
        qpos = n - (hi - lo) + np.arange(hi - lo)
        kpos = np.arange(n)
        vis = kpos[None] <= qpos[:, None]
        if sliding_window is not None:
            vis &= qpos[:, None] - kpos[None] < sliding_window
        for h in range(hq):
            sc = qs[:, h] @ keys[:, h // g].T * sm_scale  # [q, n]
            if soft_cap is not None:
                sc = soft_cap * np.tanh(sc / soft_cap)
            sc = np.where(vis, sc, -np.inf)
            sink = -np.inf if sinks is None else float(sinks[h])
            top = np.maximum(sc.max(-1, keepdims=True), sink)
            p = np.exp(sc - top)
            out[lo:hi, h] = (p / (p.sum(-1, keepdims=True) + np.exp(sink - top))) @ vals[:, h // g]
    return out
