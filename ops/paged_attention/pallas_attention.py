"""Entry point of the Pallas/Triton ragged paged attention: picks tile shapes from the static shapes and runs
the decode launch (A) and the prefill launch (B) of ``pallas_triton``; see that module for the algorithm.

Shapes: T tokens, S sequences, P block-table width, Hq q heads, K kv heads, D head dim, BS block size.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from ..device_info import gpu_compute_capability
from ..device_info import num_sms as device_num_sms
from . import mosaic_prefill
from .kv_cache import kv_scales
from .pallas_triton import (
    TileConfig,
    _next_pow2,
    decode_schedule,
    launch,
    merge_splits,
    prefill_schedule,
    scatter_decode_rows,
)

# A float8 cache's tiles converted to q's dtype or to float16 (TileConfig.fp8_f16) in both launches; "auto":
# float16 in the decode launch only (H200, docs/kernels.md: decode 1.1-1.35x faster than with q-dtype
# tiles of the same shape; prefill 2-4% slower).
FP8_DOTS = ("auto", "q", "f16")


def decode_config(num_seqs: int, num_kv_heads: int, group: int, head_dim: int, max_ctx: int,
                  num_sms: int | None = None, kv_itemsize: int = 2, num_splits: int | None = None) -> TileConfig:
    """Launch A: ~16 rows (the minimum tensor-core M), 64 keys a step, split-K until the GPU has
    ~8 programs per SM, each split keeping >= 512 keys. A float8 cache (kv_itemsize 1): 128 keys a step (the
    bytes of a bf16 tile), float16 tiles, and split-K only below ~4 programs per SM (each split >= 1024 keys):
    at B=128, ctx 2048 that tile runs 209 us, against 329 us for the bf16 cache's tile with bf16 tiles and 312 us
    over a bf16 cache; it is the fastest of 1/2/4 splits at B=32/128/256 (H200, docs/kernels.md). ``num_splits``
    forces the split-K count."""
    gp = _next_pow2(group)
    block_q = max(1, 16 // gp)
    block_n = 64 if head_dim <= 128 else 32
    per_sm, min_keys = 8, 512
    if kv_itemsize == 1:
        block_n, per_sm, min_keys = 2 * block_n, 4, 1024
    sms = num_sms or device_num_sms()
    want = max(1, -(-per_sm * sms // max(1, num_seqs * num_kv_heads)))
    splits = max(1, min(want, max_ctx // min_keys, 16))
    splits = 1 << (splits.bit_length() - 1)  # power of two: stable compile set
    if num_splits is not None:  # forced (LLM(attention_decode_splits=...))
        splits = num_splits
    return TileConfig(block_q=block_q, block_n=block_n, num_splits=splits, num_warps=4, num_stages=3,
                      fp8_f16=kv_itemsize == 1)


def prefill_config(group: int, head_dim: int, itemsize: int = 2) -> TileConfig:
    """Launch B: 128 rows (BQ tokens x all q heads of one kv head), 64 keys a step, 4 warps (H200 sweep in
    docs/kernels.md: 235 TFLOP/s at 1 x 8k against 203 with 8 warps). Wide rows (D=256 bf16, or
    fp32): 64 rows, 32 keys, 8 warps -- chosen from ptxas resource counts (the 128-row tile spills ~1.3 KB of
    registers per thread at D=256; this one spills none)."""
    gp = _next_pow2(group)
    if head_dim * itemsize > 256:
        return TileConfig(block_q=max(1, 64 // gp), block_n=32, num_warps=8, num_stages=2)
    return TileConfig(block_q=max(1, 128 // gp), block_n=64, num_warps=4, num_stages=3)


def _check(q, kv_cache, query_start_loc, seq_lens, block_tables, sliding_window, soft_cap):
    if q.ndim != 3:
        raise ValueError(f"q must be [T, Hq, D], got shape {q.shape}")
    if kv_cache.ndim != 5 or kv_cache.shape[0] != 2:
        raise ValueError(f"kv_cache must be [2, NB, BS, K, D], got shape {kv_cache.shape}")
    _num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = kv_cache.shape[3]
    if kv_cache.shape[4] != head_dim:
        raise ValueError(f"head_dim of q ({head_dim}) != head_dim of kv_cache ({kv_cache.shape[4]})")
    if num_q_heads % num_kv_heads:
        raise ValueError(f"num_q_heads={num_q_heads} is not a multiple of num_kv_heads={num_kv_heads}")
    if head_dim < 16 or head_dim % 8 or head_dim > 256:
        raise ValueError(f"head_dim={head_dim}: the Pallas kernel needs a multiple of 8 in [16, 256] (tiles pad it "
                         "to a power of two)")
    if query_start_loc.shape != (seq_lens.shape[0] + 1,) or block_tables.shape[0] != seq_lens.shape[0]:
        raise ValueError(f"inconsistent metadata shapes: query_start_loc {query_start_loc.shape}, "
                         f"seq_lens {seq_lens.shape}, block_tables {block_tables.shape}")
    if sliding_window is not None and int(sliding_window) < 1:
        raise ValueError(f"sliding_window={sliding_window} must be >= 1")
    if soft_cap is not None and not float(soft_cap) > 0:
        raise ValueError(f"soft_cap={soft_cap} must be > 0")


def ragged_paged_attention_pallas(
    q: jax.Array,  # [T, Hq, D]
    kv_cache: jax.Array,  # [2, NB, BS, K, D]
    query_start_loc: jax.Array,  # [S + 1] int32
    seq_lens: jax.Array,  # [S] int32
    block_tables: jax.Array,  # [S, P] int32
    *,
    sm_scale: float,
    sliding_window: int | None = None,
    soft_cap: float | None = None,
    interpret: bool = False,
    decode_cfg: TileConfig | None = None,
    prefill_cfg: TileConfig | None = None,
    k_scale=None,
    v_scale=None,
    prefill_impl: str = "triton",
    mosaic_min_q_len: int | None = None,
    decode_splits: int | None = None,
    fp8_dot: str = "auto",
    sinks: jax.Array | None = None,
) -> jax.Array:
    """Same contract as ``ragged_paged_attention_reference`` (outputs of padding tokens unspecified).
    A float8 cache is read as fp8 tiles (see pallas_triton.py); the e4m3 conversion needs sm_89+.
    ``prefill_impl="mosaic"`` runs the sequences of >= ``mosaic_prefill.MIN_Q_LEN`` new tokens through the Hopper
    Mosaic GPU prefill (mosaic_prefill.py) where it covers the call, the shorter ones through the Triton prefill;
    ``mosaic_min_q_len`` overrides that threshold (tests and the kernel benchmark). ``decode_splits`` forces the
    decode launch's split-K count; ``fp8_dot`` (one of FP8_DOTS) how a float8 cache's tiles feed the dots.
    ``sinks`` [Hq] (attention-sink logits, gpt-oss) run in the Triton launches; the Mosaic prefill has no sinks,
    so such calls keep every prefill on the Triton launch."""
    if fp8_dot not in FP8_DOTS:
        raise ValueError(f"fp8_dot={fp8_dot!r} is not supported; choose one of {FP8_DOTS}")
    _check(q, kv_cache, query_start_loc, seq_lens, block_tables, sliding_window, soft_cap)
    if sinks is not None and sinks.shape != (q.shape[1],):
        raise ValueError(f"sinks must be [Hq] = [{q.shape[1]}], got shape {sinks.shape}")
    scales = kv_scales(kv_cache, k_scale, v_scale)
    num_tokens, num_q_heads, head_dim = q.shape
    _, num_blocks, block_size, num_kv_heads, _ = kv_cache.shape
    num_seqs, pages_per_seq = block_tables.shape
    group = num_q_heads // num_kv_heads
    query_start_loc = query_start_loc.astype(jnp.int32)
    seq_lens = seq_lens.astype(jnp.int32)
    block_tables = block_tables.astype(jnp.int32)
    cfg_a = decode_cfg or decode_config(num_seqs, num_kv_heads, group, _next_pow2(head_dim),
                                        pages_per_seq * block_size,
                                        kv_itemsize=kv_cache.dtype.itemsize, num_splits=decode_splits)
    cfg_b = prefill_cfg or prefill_config(group, _next_pow2(head_dim), q.dtype.itemsize)
    forced = fp8_dot if scales is not None else "auto"
    if forced != "auto":
        cfg_a, cfg_b = (dataclasses.replace(c, fp8_f16=forced == "f16") for c in (cfg_a, cfg_b))

    q_rows = q.reshape(num_tokens * num_q_heads, head_dim)
    kv_rows = kv_cache.reshape(2 * num_blocks * block_size * num_kv_heads, head_dim)
    run = functools.partial(launch, q_rows=q_rows, kv_rows=kv_rows, query_start_loc=query_start_loc,
                            seq_lens=seq_lens, block_tables=block_tables, num_q_heads=num_q_heads,
                            num_kv_heads=num_kv_heads, block_size=block_size, num_blocks=num_blocks,
                            sm_scale=sm_scale, sliding_window=sliding_window, soft_cap=soft_cap,
                            kv_scales=scales, sinks=sinks, interpret=interpret)

    decode_sched = decode_schedule(query_start_loc, cfg_a.block_q)
    prefill_needed = num_tokens > cfg_a.block_q  # else no sequence can have q_len > BQ_A
    if prefill_impl not in ("triton", "mosaic"):
        raise ValueError(f"prefill_impl={prefill_impl!r}; choose 'triton' or 'mosaic'")
    cc = gpu_compute_capability() if prefill_impl == "mosaic" else None
    if cc is not None and cc[0] != 9:
        raise ValueError(f"prefill_impl='mosaic' needs a Hopper GPU (sm_90, wgmma/TMA); this one is sm_{cc[0]}{cc[1]}")
    # Mosaic GPU prefill (Hopper) for the sequences of >= MIN_Q_LEN new tokens; the Triton prefill keeps the rest
    long_len = max(mosaic_min_q_len or mosaic_prefill.MIN_Q_LEN, cfg_a.block_q + 1)
    use_mosaic = (prefill_impl == "mosaic" and num_tokens >= long_len and scales is None and sinks is None
                  and mosaic_prefill.supported(q, kv_cache, sliding_window, soft_cap))
    if prefill_needed:
        bq = cfg_b.block_q
        slots = min(num_tokens // bq + num_seqs, num_tokens // bq + num_tokens // (cfg_a.block_q + 1) + 1)
        prefill_sched = prefill_schedule(query_start_loc, cfg_a.block_q + 1, bq, max(1, slots),
                                         max_q_len=long_len if use_mosaic else None)
    if cfg_a.num_splits == 1:
        out = run(decode_sched, cfg=cfg_a)
        if prefill_needed:
            out = run(prefill_sched, out=out, cfg=cfg_b)  # fills the other rows of the same buffer
    else:
        merged = merge_splits(*run(decode_sched, cfg=cfg_a), cfg_a.num_splits, q.dtype)
        if prefill_needed:
            out = run(prefill_sched, cfg=cfg_b)
        else:
            out = jnp.zeros_like(q_rows)
        out = scatter_decode_rows(out, merged, query_start_loc, cfg_a.block_q)
    out = out.reshape(num_tokens, num_q_heads, head_dim)
    if use_mosaic:
        bq = mosaic_prefill.block_q(num_q_heads, num_kv_heads)
        slots = num_tokens // bq + num_tokens // long_len + 1  # each long sequence adds at most one partial block
        sched = prefill_schedule(query_start_loc, long_len, bq, slots)
        rows = mosaic_prefill.paged_prefill_mosaic(q, kv_cache, query_start_loc, seq_lens, block_tables, sched,
                                                   sm_scale=sm_scale, soft_cap=soft_cap)
        out = mosaic_prefill.gather_slots(rows, query_start_loc, long_len, out)
    return out
