"""Ragged paged attention as a Pallas kernel lowered through Triton (NVIDIA sm_80+; interpret mode on CPU).

One kernel, launched twice per call with different tile shapes:

* launch A ("decode"): sequences with 1 <= q_len <= BQ_A (decodes, short chunks). One program per
  (kv head, sequence, KV split); all q heads of the kv head (and the <= BQ_A query tokens) form the rows of
  one tile, so each KV page is read once per kv head. Split-K (flash-decoding) when there are too few
  (sequence, head) pairs to fill the GPU; the partial results (compact: S x BQ_A token rows per split, not T)
  are merged in jnp and scattered into their token rows.
* launch B ("prefill"): sequences with q_len > BQ_A, in q blocks of BQ_B tokens (BQ_B * G rows), the
  heaviest (last, most keys) blocks first. Without split-K it writes into launch A's output buffer (aliased),
  so the two launches fill disjoint token rows of one output.

Shapes: T tokens, S sequences, P block-table width, Hq q heads, K kv heads, G = Hq // K (padded to a power of
two, Gp), D head dim (padded to a power of two, Dp, inside the kernel: columns >= D are masked loads of zeros and
masked stores, so Phi-3's D = 96 runs as 128-wide tiles), NB blocks, BS block size. Inside the kernel q is viewed
as rows [T * Hq, D] and the cache
as rows [2 * NB * BS * K, D] (a free reshape of the layout [2, NB, BS, K, D]); K/V rows are gathered through
the block table one token at a time, so block sizes need not divide the KV tile.

float8 cache (``kv_scales`` given): K/V tiles are loaded as fp8 (half the bytes of bf16), converted to q's
dtype (exact: every e4m3/e5m2 value is a bf16/fp16 value) and fed to the same dots; k_scale is folded into the
softmax scale (scores = k_scale * q.k8) and v_scale into the output (out = v_scale * sum p v8), both exact
rewrites of attention over the dequantized cache. With ``TileConfig.fp8_f16`` (2-byte q only) the tiles are
converted to float16 instead: on sm_89+ that is one hardware convert per two values, where e4m3 -> bf16 goes
through float16 and float32. q is then pre-multiplied by the whole score scale and saturated to the float16
range (+-65504; post-RoPE queries times the softmax scale are far below it) and p is fed to the PV dot in
float16 (more mantissa than bf16; p <= 1, so only values below 6e-8 are lost).

Keys are visited in three loops: tiles that are fully visible to every row of the q block run without any
masking; the diagonal / last tile (and the sliding-window edge) run with the causal mask. Loads beyond a
sequence's length are masked (never issued), so unused cache blocks and block-table entries are never read.

Outputs of padding tokens (after query_start_loc[-1]) are unspecified: the engine ignores them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

LOG2E = math.log2(math.e)
M_INIT = -1e30  # finite running-max start: masked scores are -inf, so exp2(-inf - M_INIT) == 0
F16_MAX = 65504.0


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """Static tile shape of one launch: BQ query tokens x Gp heads = rows, BN keys per step."""
    block_q: int
    block_n: int
    num_splits: int = 1
    num_warps: int = 4
    num_stages: int = 2
    fp8_f16: bool = False  # float8 cache: dots in float16 (see the module docstring); ignored otherwise


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _rows2d(rows, cols):
    """Index arrays (both [R, D]) that gather whole rows of a [N, D] ref: Pallas' interpret mode cannot mix
    an index array with a slice, and Triton sees the same contiguous columns either way."""
    shape = (rows.shape[0], cols.shape[1])
    return jnp.broadcast_to(rows[:, None], shape), jnp.broadcast_to(cols, shape)


def _kernel(sched_ref, qsl_ref, seq_lens_ref, bt_ref, q_ref, kv_ref, *rest, cfg: TileConfig, num_q_heads,
            num_kv_heads, group, group_pad, head_dim, block_size, num_blocks, pages_per_seq, sm_scale,
            sliding_window, soft_cap, split_out, aliased, fp8, sinks=False):
    """One program: q block (sched_ref[1, i], of sequence sched_ref[0, i]) x kv head x KV split."""
    if fp8:
        scale_ref, rest = rest[0], rest[1:]  # [2] float32: k_scale, v_scale
    if sinks:
        sinks_ref, rest = rest[0], rest[1:]  # [Hq] float32 attention-sink logits
    if aliased:
        rest = rest[1:]  # the aliased input buffer is the same memory as the first output
    if split_out:
        o_ref, m_ref, l_ref = rest
    else:
        (o_ref,) = rest
    h = pl.program_id(0)
    i = pl.program_id(1)
    sp = pl.program_id(2)
    seq = sched_ref[0, i]
    qblk = sched_ref[1, i]
    bq, bn = cfg.block_q, cfg.block_n
    rows = bq * group_pad

    @pl.when(seq >= 0)
    def _():
        q_start = qsl_ref[seq]
        q_len = qsl_ref[seq + 1] - q_start
        seq_len = seq_lens_ref[seq]
        first_q = seq_len - q_len + qblk * bq  # position of the block's first query token
        last_q = jnp.minimum(first_q + bq, seq_len) - 1

        r = jnp.arange(rows, dtype=jnp.int32)
        tok_local = lax.div(r, jnp.int32(group_pad))
        g = lax.rem(r, jnp.int32(group_pad))
        tok = q_start + qblk * bq + tok_local
        row_ok = (qblk * bq + tok_local < q_len) & (g < group)
        # Rows that are not ours point one past the end: masked on the GPU, and dropped (not duplicated)
        # by interpret mode's scatter, where a repeated index could write back a stale value.
        qrow = jnp.where(row_ok, tok * num_q_heads + h * group + g, q_ref.shape[0])
        qpos = first_q + tok_local  # [rows]
        head_pad = _next_pow2(head_dim)
        cols = jnp.arange(head_pad, dtype=jnp.int32)[None, :]
        col_ok = None if head_pad == head_dim else jnp.broadcast_to(cols < head_dim, (bn, head_pad))
        qmask = jnp.broadcast_to(row_ok[:, None], (rows, head_pad))
        if head_pad != head_dim:
            qmask &= cols < head_dim
        q = plgpu.load(q_ref.at[_rows2d(qrow, cols)], mask=qmask, other=0.0)

        kv_hi = last_q + 1
        kv_lo = 0
        if sliding_window is not None:
            kv_lo = lax.div(jnp.maximum(first_q - sliding_window + 1, 0), jnp.int32(bn)) * bn
        n_tiles = lax.div(kv_hi - kv_lo + bn - 1, jnp.int32(bn))
        per_split = lax.div(n_tiles + cfg.num_splits - 1, jnp.int32(cfg.num_splits))
        t_begin = jnp.minimum(sp * per_split, n_tiles)
        t_end = jnp.minimum(t_begin + per_split, n_tiles)
        # Tiles [full_lo, full_hi) are visible to every row: no mask needed.
        full_hi = lax.div(first_q + 1 - kv_lo, jnp.int32(bn))
        if sliding_window is not None:
            edge = jnp.maximum(last_q - sliding_window + 1, 0) - kv_lo
            full_lo = jnp.minimum(lax.div(edge + bn - 1, jnp.int32(bn)), full_hi)
        else:
            full_lo = jnp.int32(0)

        qk_scale = sm_scale if soft_cap is None else sm_scale / soft_cap
        if fp8:
            qk_scale = qk_scale * scale_ref[0]  # scores over dequantized keys: k_scale * (q . k8)
        f16 = fp8 and cfg.fp8_f16 and q.dtype.itemsize == 2
        if f16:  # the whole score scale folded into q: s = q'.k8 comes out of the dot ready for exp2 / tanh
            q_scale = qk_scale * LOG2E if soft_cap is None else qk_scale
            q = jnp.clip(q.astype(jnp.float32) * q_scale, -F16_MAX, F16_MAX).astype(jnp.float16)
        offs_n = jnp.arange(bn, dtype=jnp.int32)

        def step(t, carry, masked):
            acc, m_i, l_i = carry
            kpos = kv_lo + t * bn + offs_n  # [bn]
            kok = kpos < kv_hi
            page = lax.div(kpos, jnp.int32(block_size))
            slot = kpos - page * block_size
            if masked:
                page = jnp.where(kok, page, 0)
                blk = plgpu.load(bt_ref.at[seq * pages_per_seq + page], mask=kok, other=0)
            else:
                blk = bt_ref[seq * pages_per_seq + page]
            krow = (blk * block_size + slot) * num_kv_heads + h
            vrow = krow + num_blocks * block_size * num_kv_heads
            if masked or col_ok is not None:
                lmask = jnp.broadcast_to(kok[:, None], (bn, head_pad)) if masked else col_ok
                if masked and col_ok is not None:
                    lmask &= col_ok
                k = plgpu.load(kv_ref.at[_rows2d(krow, cols)], mask=lmask, other=0.0)
                v = plgpu.load(kv_ref.at[_rows2d(vrow, cols)], mask=lmask, other=0.0)
            else:
                k = kv_ref[_rows2d(krow, cols)]
                v = kv_ref[_rows2d(vrow, cols)]
            if fp8:
                k, v = k.astype(q.dtype), v.astype(q.dtype)
            s = plgpu.dot(q, k, trans_b=True)  # [rows, bn] f32
            if soft_cap is not None:
                s = jnp.tanh(s if f16 else s * qk_scale) * (soft_cap * LOG2E)
            elif not f16:
                s = s * (qk_scale * LOG2E)  # scores in log2 units: exp2 below
            if masked:
                vis = (kpos[None, :] <= qpos[:, None]) & kok[None, :]
                if sliding_window is not None:
                    vis &= qpos[:, None] - kpos[None, :] < sliding_window
                s = jnp.where(vis, s, -jnp.inf)
            m_new = jnp.maximum(m_i, jnp.max(s, axis=1))
            alpha = jnp.exp2(m_i - m_new)
            p = jnp.exp2(s - m_new[:, None])
            l_new = l_i * alpha + jnp.sum(p, axis=1)
            acc = acc * alpha[:, None] + plgpu.dot(p.astype(v.dtype), v)
            return acc, m_new, l_new

        carry = (jnp.zeros((rows, head_pad), jnp.float32), jnp.full((rows,), M_INIT, jnp.float32),
                 jnp.zeros((rows,), jnp.float32))
        if sinks:  # the running max / sum start from the sink (log2 units); only split 0 counts its exp
            head = jnp.where(row_ok, h * group + g, 0)
            sink = plgpu.load(sinks_ref.at[head], mask=row_ok, other=0.0) * LOG2E
            first_split = (1 - jnp.minimum(sp, 1)).astype(jnp.float32)  # (arithmetic: Triton's lowering of a
            # scalar-predicate where over float literals adds an i1 tensor to an f32 one)
            carry = (carry[0], sink, carry[2] + first_split)
        masked_step = functools.partial(step, masked=True)
        if sliding_window is not None:
            carry = lax.fori_loop(t_begin, jnp.minimum(t_end, full_lo), masked_step, carry)
        carry = lax.fori_loop(jnp.maximum(t_begin, full_lo), jnp.minimum(t_end, full_hi),
                              functools.partial(step, masked=False), carry)
        carry = lax.fori_loop(jnp.maximum(t_begin, jnp.maximum(full_hi, full_lo)), t_end, masked_step, carry)
        acc, m_i, l_i = carry
        if fp8:
            acc = acc * scale_ref[1]  # sum p (v_scale * v8) = v_scale * sum p v8

        if split_out:
            # Compact partial rows (split, program slot, token in block, head): [splits * n_slots * rows]
            # instead of splits x all T tokens, so the merge reads only what launch A wrote.
            n_slots = o_ref.shape[0] // (cfg.num_splits * bq * num_q_heads)
            crow = ((sp * n_slots + i) * bq + tok_local) * num_q_heads + h * group + g
            orow = jnp.where(row_ok, crow, o_ref.shape[0])
            plgpu.store(o_ref.at[_rows2d(orow, cols)], acc, mask=qmask)
            plgpu.store(m_ref.at[orow], m_i, mask=row_ok)
            plgpu.store(l_ref.at[orow], l_i, mask=row_ok)
        else:
            out = acc / jnp.where(l_i == 0.0, 1.0, l_i)[:, None]
            plgpu.store(o_ref.at[_rows2d(qrow, cols)], out.astype(o_ref.dtype), mask=qmask)


def decode_schedule(query_start_loc: jax.Array, max_q_len: int) -> jax.Array:
    """[2, S] (sequence id or -1, q block 0): launch A takes sequences with 1 <= q_len <= max_q_len."""
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    ids = jnp.arange(q_lens.shape[0], dtype=jnp.int32)
    seq = jnp.where((q_lens >= 1) & (q_lens <= max_q_len), ids, -1)
    return jnp.stack([seq, jnp.zeros_like(seq)])


def prefill_blocks(query_start_loc: jax.Array, min_q_len: int, block_q: int,
                   max_q_len: int | None = None) -> jax.Array:
    """[S] int32: each sequence's q blocks in ``prefill_schedule`` (0 for a sequence outside
    min_q_len <= q_len < max_q_len). Slots run sequence by sequence, so their cumsum places each sequence's blocks
    (the Mosaic prefill's gather back to token order reads the same layout)."""
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    mine = (q_lens >= min_q_len) & (q_lens < max_q_len) if max_q_len is not None else q_lens >= min_q_len
    return jnp.where(mine, (q_lens + block_q - 1) // block_q, 0).astype(jnp.int32)


def prefill_schedule(query_start_loc: jax.Array, min_q_len: int, block_q: int, num_slots: int,
                     max_q_len: int | None = None) -> jax.Array:
    """[2, num_slots] (sequence id or -1, q block index): every q block of the sequences with
    min_q_len <= q_len (< max_q_len when given), a sequence's last (heaviest) block first."""
    nblk = prefill_blocks(query_start_loc, min_q_len, block_q, max_q_len)
    cum = jnp.cumsum(nblk)
    slot = jnp.arange(num_slots, dtype=jnp.int32)
    # Count of cumulative ends <= slot (not jnp.searchsorted: its loop costs ~150 µs on a GPU).
    seq = jnp.minimum(jnp.sum(cum[None, :] <= slot[:, None], axis=1, dtype=jnp.int32), nblk.shape[0] - 1)
    local = slot - (cum[seq] - nblk[seq])
    valid = slot < cum[-1]
    return jnp.stack([jnp.where(valid, seq, -1), jnp.where(valid, nblk[seq] - 1 - local, 0)])


def launch(sched, q_rows, kv_rows, query_start_loc, seq_lens, block_tables, out=None, *, cfg: TileConfig,
           num_q_heads, num_kv_heads, block_size, num_blocks, sm_scale, sliding_window, soft_cap,
           kv_scales=None, sinks=None, interpret=False):
    """One pallas_call over the programs of ``sched``. q_rows [T*Hq, D], kv_rows [2*NB*BS*K, D]; with a
    float8 cache, kv_scales [2] float32 (k_scale, v_scale), else None; ``sinks`` [Hq] attention-sink logits
    (joining each row's softmax denominator: the running max starts at the sink and the running sum at 1) or None.

    Returns [T*Hq, D] in q's dtype (written in place into ``out`` when given), or with ``cfg.num_splits > 1``
    the partial (acc [R, D], m [R], l [R]) in float32 (m in log2 units), R = splits * n_slots * BQ * Hq rows
    ordered (split, schedule slot, token of the block, head): see ``merge_splits`` / ``scatter_decode_rows``."""
    n_rows, head_dim = q_rows.shape
    group = num_q_heads // num_kv_heads
    split_out = cfg.num_splits > 1
    if split_out and out is not None:
        raise ValueError("a split-K launch cannot write into an aliased output")
    kernel = functools.partial(
        _kernel, cfg=cfg, num_q_heads=num_q_heads, num_kv_heads=num_kv_heads, group=group,
        group_pad=_next_pow2(group), head_dim=head_dim, block_size=block_size, num_blocks=num_blocks,
        pages_per_seq=block_tables.shape[1], sm_scale=float(sm_scale),
        sliding_window=None if sliding_window is None else int(sliding_window),
        soft_cap=None if soft_cap is None else float(soft_cap), split_out=split_out, aliased=out is not None,
        fp8=kv_scales is not None, sinks=sinks is not None)
    if split_out:
        total = cfg.num_splits * sched.shape[1] * cfg.block_q * num_q_heads
        out_shape = (jax.ShapeDtypeStruct((total, head_dim), jnp.float32),
                     jax.ShapeDtypeStruct((total,), jnp.float32), jax.ShapeDtypeStruct((total,), jnp.float32))
    else:
        out_shape = jax.ShapeDtypeStruct((n_rows, head_dim), q_rows.dtype)
    args = [sched, query_start_loc, seq_lens, block_tables.reshape(-1), q_rows, kv_rows]
    if kv_scales is not None:
        args.append(kv_scales.astype(jnp.float32).reshape(2))
    if sinks is not None:
        args.append(sinks.astype(jnp.float32).reshape(num_q_heads))
    aliases = {}
    if out is not None:
        aliases = {len(args): 0}
        args.append(out)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(num_kv_heads, sched.shape[1], cfg.num_splits),
        input_output_aliases=aliases,
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        name=f"ragged_paged_attention_bq{cfg.block_q}_bn{cfg.block_n}_s{cfg.num_splits}",
    )(*args)


def scatter_decode_rows(out, merged, query_start_loc, block_q: int):
    """Put launch A's merged rows ([S * BQ * Hq, D], ordered (sequence, token of the block, head)) into their
    token rows of ``out`` [T * Hq, D]; rows of tokens that do not exist (q_len < BQ, or sequences launch A
    did not take) are dropped. Returns the updated ``out`` (in place under jit)."""
    num_seqs = query_start_loc.shape[0] - 1
    num_tokens_x_heads, head_dim = out.shape
    heads = merged.shape[0] // (num_seqs * block_q)
    num_tokens = num_tokens_x_heads // heads
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    local = jnp.arange(block_q, dtype=jnp.int32)[None, :]
    taken = (q_lens >= 1) & (q_lens <= block_q)
    tok = jnp.where(taken[:, None] & (local < q_lens[:, None]), query_start_loc[:-1, None] + local, num_tokens)
    out = out.reshape(num_tokens, heads, head_dim)
    out = out.at[tok.reshape(-1)].set(merged.reshape(num_seqs * block_q, heads, head_dim), mode="drop")
    return out.reshape(num_tokens_x_heads, head_dim)


def merge_splits(acc, m, l, num_splits: int, out_dtype) -> jax.Array:
    """Flash-decoding merge: acc [splits*R, D], m/l [splits*R] (log2 units) -> [R, D]. Rows no split wrote
    (tokens that do not exist) hold garbage in acc/m/l; they are dropped by the scatter, but must not turn
    into NaN warnings: sanitize with where()."""
    d = acc.shape[-1]
    acc = acc.reshape(num_splits, -1, d)
    m = m.reshape(num_splits, -1)
    l = l.reshape(num_splits, -1)
    m = jnp.where(jnp.isnan(m), M_INIT, m)
    m_max = jnp.max(m, axis=0)
    w = jnp.exp2(jnp.minimum(m - m_max[None], 0.0))
    l_tot = jnp.sum(jnp.where(jnp.isfinite(l), l, 0.0) * w, axis=0)
    o = jnp.sum(jnp.where(jnp.isfinite(acc), acc, 0.0) * w[..., None], axis=0)
    return (o / jnp.where(l_tot > 0, l_tot, 1.0)[:, None]).astype(out_dtype)
