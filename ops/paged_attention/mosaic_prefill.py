"""Paged causal prefill attention for Hopper in Mosaic GPU: sequences of >= ``MIN_Q_LEN`` new tokens under
``pallas_mosaic``, the default on sm_90 where ``supported`` (dispatch.py says why); GPU-tested on the H200.

Why: JAX's dense Mosaic GPU FlashAttention-3 (``attention_mgpu``) reaches 570 TFLOP/s at 1 x 8k on the H200 with
64-row query blocks, our Triton paged prefill 312 (issue 4's target: 350). This is that design reading K/V from
the paged cache (docs/kernels.md): 475 TFLOP/s at 1 x 8k, 160 at 8 x 1k (Triton: 310 / 195).

* Work: one CTA per (kv head, schedule slot) of ``pallas_triton.prefill_schedule`` (slot -> sequence, q block of
  ``2 * tq`` tokens). Two compute warpgroups own ``tq = 64 // group`` tokens each, x the ``group`` q heads of the
  kv head: 64 query rows, head-major (row = head j * tq + token t), loaded by ``group`` TMA boxes. A third
  warpgroup streams K/V tiles of 128 keys by TMA, one copy per page, into ``stages`` slots.
* Causal within the sequence: a query at position p (cached tokens + its index in the chunk) sees keys <= p.
* Finite tails: masked keys get p = 0, but 0 x NaN = NaN in the PV wgmma, so every key row this kernel loads
  must be finite. Pages past the sequence's last one are replaced by its first page (finite, masked). The last
  page is copied whole (TMA copies into tiled shared memory come in 8-row tiles: a row-by-row tail copy does not
  lower), so its slots past the sequence's end must hold finite values: they do in the engine
  (``allocate_kv_cache`` zero-fills, writes are finite K/V), and the GPU test poisons only unused blocks.
* q by slot: ``slot_queries`` gathers each q block into ``[slots, 2 * tq, Hq, D]`` first (one pass over q). TMA
  copies into tiled shared memory address global memory in whole 8-row tiles, so a copy must start at a multiple
  of 8 rows, which a sequence's first token in the flattened batch is not.
* Output by slot, ``[slots, 2 * tq, Hq, D]`` (a TMA store cannot be masked, and a q block running past its
  sequence's end covers the next sequence's rows); ``gather_slots`` puts the valid rows back in token order.
* Lowered with Lane semantics (explicit layouts, as written), the default of jax 0.10; jax 0.11 made Warpgroup
  semantics the default.

Scope: bf16 / fp16 cache and queries, head_dim 64 / 128, block_size dividing 128, GQA group 1-8 (a power of two:
64 // group tokens, a multiple of 8, per warpgroup); no sliding window, soft cap or fp8 cache (those stay on the
Triton kernel).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from .pallas_triton import prefill_blocks

BLOCK_KV = 128
# Sequences with at least this many new tokens take this kernel under prefill_impl="mosaic" (shorter ones the
# Triton prefill). Measured at 8k tokens (H200): 1 x 8k 1158 us vs Triton 1775 us, but 8 x 1k
# 430 vs 353 us (the q / output gathers over every token and the per-CTA start-up weigh more on short sequences).
MIN_Q_LEN = 2048
ROWS_PER_WG = 64
COMPUTE_WGS = 2


def supported(q, kv_cache, sliding_window=None, soft_cap=None) -> bool:
    """Whether this kernel covers the call (else the Triton kernel runs it): no sliding window (its key loop
    starts at key 0); soft-capped scores are covered."""
    _, num_q_heads, head_dim = q.shape
    _, _, block_size, num_kv_heads, _ = kv_cache.shape
    group = num_q_heads // num_kv_heads
    if soft_cap is not None and not float(soft_cap) > 0:
        return False
    return (sliding_window is None and q.dtype == kv_cache.dtype
            and q.dtype in (jnp.bfloat16, jnp.float16) and head_dim in (64, 128) and BLOCK_KV % block_size == 0
            and ROWS_PER_WG % group == 0 and (ROWS_PER_WG // group) % 8 == 0)  # q boxes of whole 8-row tiles


def block_q(num_q_heads: int, num_kv_heads: int) -> int:
    """Query tokens per CTA (the schedule's block): two warpgroups of 64 // group tokens."""
    return COMPUTE_WGS * (ROWS_PER_WG // (num_q_heads // num_kv_heads))


def paged_prefill_mosaic(q, kv_cache, query_start_loc, seq_lens, block_tables, sched, *, sm_scale: float,
                         soft_cap: float | None = None, stages: int = 2) -> jax.Array:
    """-> [slots, block_q, Hq, D] in q's dtype: the attention output of every q block in ``sched`` ([2, slots]:
    sequence id or -1, q block index; rows of tokens past the sequence's end are unspecified).

    q [T, Hq, D]; kv_cache [2, NB, BS, Hkv, D]; query_start_loc [S + 1]; seq_lens [S] (cached + new tokens);
    block_tables [S, P]. ``soft_cap``: scores s * sm_scale become cap * tanh(s * sm_scale / cap) (Gemma 2)."""
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    _, num_q_heads, head_dim = q.shape
    _, _, block_size, num_kv_heads, _ = kv_cache.shape
    if not supported(q, kv_cache, soft_cap=soft_cap):
        raise ValueError(f"paged Mosaic GPU prefill does not cover q {q.dtype} {q.shape}, cache {kv_cache.dtype} "
                         f"{kv_cache.shape}")
    group = num_q_heads // num_kv_heads
    tq = ROWS_PER_WG // group
    bq = COMPUTE_WGS * tq
    pages = BLOCK_KV // block_size
    slots = sched.shape[1]
    pages_per_seq = block_tables.shape[1]
    dtype = q.dtype
    log2e = math.log2(math.e)

    q_slots = slot_queries(q, sched, query_start_loc, bq)
    # The schedule, query starts, sequence lengths and block tables in one fresh int32 array: the engine's
    # metadata arrive as slices of one packed buffer, which XLA passes to a custom call as offset pointers, and
    # the Mosaic GPU custom call refuses inputs that are not 256-byte aligned.
    num_seqs = seq_lens.shape[0]
    at_qsl = 2 * slots
    at_seq_lens = at_qsl + num_seqs + 1
    at_tables = at_seq_lens + num_seqs
    meta = jnp.concatenate([sched.reshape(-1), query_start_loc, seq_lens, block_tables.reshape(-1)]).astype(jnp.int32)

    def kernel(meta_ref, q_ref, kv_ref, out_ref, scoped):
        q_smem, k_smem, v_smem = scoped[0]
        k_ready, v_ready, q_ready = scoped[1]
        k_free, v_free = scoped[2]
        schedule = scoped[3]
        kvh = lax.axis_index("kvh")
        slot = lax.axis_index("slot")
        wg = lax.axis_index("wg")
        seq_raw = meta_ref[slot]
        live = seq_raw >= 0
        seq = jnp.maximum(seq_raw, 0)
        block0 = meta_ref[slots + slot] * bq  # first token of the CTA's block, counted within the sequence
        q_len = meta_ref[at_qsl + seq + 1] - meta_ref[at_qsl + seq]
        kv_len = meta_ref[at_seq_lens + seq]
        cached = kv_len - q_len
        last_token = jnp.minimum(block0 + bq, q_len) - 1
        cta_steps = jnp.where(live & (block0 < q_len), (cached + last_token) // BLOCK_KV + 1, 0)

        def sync_schedule():
            plgpu.barrier_arrive(schedule)
            plgpu.barrier_wait(schedule)

        @pl.when(wg < COMPUTE_WGS)
        def _compute():
            plgpu.set_max_registers(232, action="increase")
            tok0 = block0 + wg * tq
            wg_last = jnp.minimum(tok0 + tq, q_len) - 1
            steps = jnp.where(live & (tok0 < q_len), (cached + wg_last) // BLOCK_KV + 1, 0)
            full_steps = jnp.minimum((cached + tok0 + 1) // BLOCK_KV, steps)  # no key masked for any row
            qs = q_smem.at[wg]

            @pl.when(steps > 0)  # idle slots and warpgroups past the sequence's end load nothing
            def _load_q():
                for j in range(group):
                    plgpu.copy_gmem_to_smem(q_ref.at[slot, pl.ds(wg * tq, tq), kvh * group + j],
                                            qs.at[pl.ds(j * tq, tq)], q_ready.at[wg])
                plgpu.barrier_wait(q_ready.at[wg])

            m_i = plgpu.layout_cast(jnp.full((ROWS_PER_WG,), -jnp.inf, jnp.float32), plgpu.Layout.WGMMA.reduce(1))
            l_i = plgpu.layout_cast(jnp.full((ROWS_PER_WG,), 0, jnp.float32), plgpu.Layout.WGMMA.reduce(1))
            acc = plgpu.layout_cast(jnp.full((ROWS_PER_WG, head_dim), 0, jnp.float32), plgpu.Layout.WGMMA)

            @pl.when(steps > 0)
            def _():
                plgpu.barrier_wait(k_ready.at[0])

            pl.when(wg == 1)(sync_schedule)

            def kv_step(step, carry, masked: bool):
                acc, m_i, l_i = carry
                s = lax.rem(step, stages)

                def qk_scope(acc_ref):
                    plgpu.wgmma(acc_ref, qs, k_smem.at[s].T)
                    sync_schedule()
                    return acc_ref[...]
                qk = pl.run_scoped(qk_scope, plgpu.ACC((ROWS_PER_WG, BLOCK_KV), jnp.float32))
                plgpu.barrier_arrive(k_free.at[s])
                if soft_cap is None:
                    qk = qk * sm_scale
                else:
                    qk = jnp.tanh(qk * (sm_scale / soft_cap)) * soft_cap
                if masked:  # causal: the row's position (cached + token) >= the key's
                    rows = plgpu.broadcasted_iota(jnp.int32, qk.shape, 0, layout=plgpu.Layout.WGMMA)
                    cols = plgpu.broadcasted_iota(jnp.int32, qk.shape, 1, layout=plgpu.Layout.WGMMA)
                    q_pos = cached + tok0 + lax.rem(rows, tq)
                    k_pos = step * BLOCK_KV + cols
                    qk = jnp.where(k_pos <= jnp.minimum(q_pos, kv_len - 1), qk, -jnp.inf)
                m_new = jnp.maximum(m_i, qk.max(axis=1) * log2e)
                alpha = jnp.exp2(m_i - m_new)
                p = jnp.exp2(qk * log2e - lax.broadcast_in_dim(m_new, qk.shape, [0]))
                acc = acc * lax.broadcast_in_dim(alpha, acc.shape, [0])
                l_i = l_i * alpha + p.sum(axis=1)
                p16 = p.astype(dtype)
                acc, l_i, m_new, p16 = lax.optimization_barrier((acc, l_i, m_new, p16))
                plgpu.barrier_arrive(schedule)
                plgpu.barrier_wait(v_ready.at[s])
                plgpu.barrier_wait(schedule)

                def pv_scope(acc_ref):
                    plgpu.wgmma(acc_ref, p16, v_smem.at[s])
                    nxt = step + 1

                    @pl.when(nxt < steps)
                    def _():
                        plgpu.barrier_wait(k_ready.at[lax.rem(nxt, stages)])
                acc = pl.run_state(pv_scope)(plgpu.ACC.init(acc))
                plgpu.barrier_arrive(v_free.at[s])
                return acc, m_new, l_i

            carry = lax.fori_loop(0, full_steps, functools.partial(kv_step, masked=False), (acc, m_i, l_i))
            acc, m_i, l_i = lax.fori_loop(full_steps, steps, functools.partial(kv_step, masked=True), carry)

            def flush(step, _):  # the other warpgroup may need more steps: keep the pipeline's barriers in step
                s = lax.rem(step, stages)
                plgpu.barrier_arrive(k_free.at[s])
                plgpu.barrier_arrive(v_free.at[s])
                sync_schedule()
                sync_schedule()
            lax.fori_loop(steps, cta_steps, flush, None)
            pl.when(wg == 0)(sync_schedule)

            @pl.when(steps > 0)
            def _store():
                out = acc / lax.broadcast_in_dim(jnp.where(l_i == 0, 1.0, l_i), acc.shape, [0])
                qs[...] = out.astype(dtype)
                plgpu.commit_smem()
                for j in range(group):
                    plgpu.copy_smem_to_gmem(qs.at[pl.ds(j * tq, tq)],
                                            out_ref.at[slot, pl.ds(wg * tq, tq), kvh * group + j])
                plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == COMPUTE_WGS)
        def _memory():
            plgpu.set_max_registers(40, action="decrease")
            last_page = jnp.maximum(kv_len - 1, 0) // block_size
            first_page = meta_ref[at_tables + seq * pages_per_seq]

            def page_ids(step):
                """The tile's page ids, read from global memory once for K and V, and before the memory
                warpgroup waits for a free slot (so their latency hides behind the wait, not in front of
                every copy)."""
                ids = []
                for i in range(pages):
                    page_idx = step * pages + i
                    page = meta_ref[at_tables + seq * pages_per_seq + jnp.minimum(page_idx, pages_per_seq - 1)]
                    ids.append(jnp.where(page_idx <= last_page, page, first_page))  # past the end: finite, masked
                return ids

            def load(ids, s, which, ready):
                src = kv_ref.at[which]
                dst = (k_smem if which == 0 else v_smem).at[s]
                for i, page in enumerate(ids):
                    plgpu.copy_gmem_to_smem(src.at[page, :, kvh], dst.at[pl.ds(i * block_size, block_size)],
                                            ready.at[s])

            for s0 in range(stages):
                @pl.when(s0 < cta_steps)
                def _prologue(s0=s0):
                    ids = page_ids(s0)
                    load(ids, s0, 0, k_ready)
                    load(ids, s0, 1, v_ready)

            @pl.loop(0, jnp.maximum(cta_steps - stages, 0))
            def _stream(step):
                s = lax.rem(step, stages)
                ids = page_ids(step + stages)
                plgpu.barrier_wait(k_free.at[s])
                load(ids, s, 0, k_ready)
                plgpu.barrier_wait(v_free.at[s])
                load(ids, s, 1, v_ready)

    def paged_attention_prefill(meta_ref, q_ref, kv_ref, out_ref):  # the name profiles show
        tiles = (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))
        smem = (plgpu.SMEM((COMPUTE_WGS, ROWS_PER_WG, head_dim), dtype, transforms=tiles),
                plgpu.SMEM((stages, BLOCK_KV, head_dim), dtype, transforms=tiles),
                plgpu.SMEM((stages, BLOCK_KV, head_dim), dtype, transforms=tiles))
        ready = (plgpu.Barrier(num_arrivals=pages, num_barriers=stages),
                 plgpu.Barrier(num_arrivals=pages, num_barriers=stages),
                 plgpu.Barrier(num_arrivals=group, num_barriers=COMPUTE_WGS))
        free = (plgpu.Barrier(num_arrivals=COMPUTE_WGS, num_barriers=stages),) * 2
        pl.run_scoped(lambda *scoped: kernel(meta_ref, q_ref, kv_ref, out_ref, scoped),
                      smem, ready, free, plgpu.Barrier(num_arrivals=COMPUTE_WGS), collective_axes="wg")

    return plgpu.kernel(
        paged_attention_prefill, out_type=jax.ShapeDtypeStruct((slots, bq, num_q_heads, head_dim), dtype),
        grid=(num_kv_heads, slots), grid_names=("kvh", "slot"), num_threads=COMPUTE_WGS + 1, thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True, lowering_semantics=plgpu.LoweringSemantics.Lane),
    )(meta, q_slots, kv_cache)


def slot_tokens(sched, query_start_loc, bq: int, num_tokens: int) -> jax.Array:
    """[slots, bq] int32: the flattened token index of every row of every schedule slot's q block, ``num_tokens``
    (out of range) for rows past a sequence's end and for idle slots."""
    seq = sched[0]
    seq_c = jnp.maximum(seq, 0)
    q_lens = query_start_loc[1:] - query_start_loc[:-1]
    local = sched[1][:, None] * bq + jnp.arange(bq, dtype=jnp.int32)[None, :]
    valid = (seq[:, None] >= 0) & (local < q_lens[seq_c][:, None])
    return jnp.where(valid, query_start_loc[seq_c][:, None] + local, num_tokens)


def slot_queries(q, sched, query_start_loc, bq: int) -> jax.Array:
    """[T, Hq, D] -> [slots, bq, Hq, D]: the q block of every schedule slot (zeros past a sequence's end and in
    idle slots), so the kernel's q copies start at multiples of 8 rows."""
    token = slot_tokens(sched, query_start_loc, bq, q.shape[0])
    return jnp.take(q, token, axis=0, mode="fill", fill_value=0)


def gather_slots(out_slots, query_start_loc, min_q_len: int, into) -> jax.Array:
    """[slots, bq, Hq, D] by schedule slot -> [T, Hq, D] in token order: each token of a sequence with q_len >=
    ``min_q_len`` takes its row of its slot (``prefill_schedule``'s order: a sequence's blocks contiguous, last
    block first), every other token keeps its row of ``into``. A gather, not a scatter: with XLA's scatter of the
    rows the call took 0.18-0.22 ms longer at 8k tokens on the H200 (1 x 8k 1382 vs 1158 us)."""
    slots, bq, num_q_heads, head_dim = out_slots.shape
    num_tokens = into.shape[0]
    nblk = prefill_blocks(query_start_loc, min_q_len, bq)
    cum = jnp.cumsum(nblk)
    token = jnp.arange(num_tokens, dtype=jnp.int32)
    seq = jnp.minimum(jnp.sum(query_start_loc[1:][None, :] <= token[:, None], axis=1, dtype=jnp.int32),
                      nblk.shape[0] - 1)
    local = token - query_start_loc[seq]
    mine = (token < query_start_loc[-1]) & (nblk[seq] > 0)
    row = (cum[seq] - 1 - local // bq) * bq + local % bq
    rows = jnp.take(out_slots.reshape(slots * bq, num_q_heads, head_dim), jnp.where(mine, row, 0), axis=0)
    return jnp.where(mine[:, None, None], rows, into)
