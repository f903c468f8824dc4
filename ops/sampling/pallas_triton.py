"""Exact truncated sampling of selected rows as a Pallas kernel lowered through Triton (NVIDIA; interpret mode
on the CPU for tests).

Why a kernel: the sampler's fast path (jaxllm/models/sampler_filters.py) decides almost every row in a fixed
number of fused XLA passes; the few rows it cannot decide need an exact threshold search whose cost must be
paid only for those rows. In XLA that takes a ``lax.cond``, and XLA's GPU runtime copies a cond's predicate to
the host and waits for it, every step, which stalls the launch of the next one. Here each program owns one row
and returns at once unless the row is selected, so an all-clear step costs one tiny launch and no host sync.

Program r (selected): the row maximum (1 pass), the top-k threshold when top_k < V (k-th largest value: RADIX_BITS
bits of the order-preserving uint32 key per pass, 32 / RADIX_BITS passes, 2^RADIX_BITS - 1 candidate thresholds
each), the survivors' mass and the top-p threshold when top_p < 1 (1 pass, then the same search on the mass),
then the Gumbel-max over the survivors (1 pass) with the noise of ``noise.gumbel``: the same token law as
``reference.exact_rows_reference``. The row is read in BLOCK_V-wide blocks from HBM/L2 (one row: 600 KB at V = 151936). The token overwrites the
row's entry of ``tokens`` (aliased in place); unselected rows keep theirs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from .noise import gumbel
from .reference import NEG_INF, sortable

BLOCK_V = 512
RADIX_BITS = 4


def _umax(a, b):
    return jnp.where(a >= b, a, b)


def _kernel(rows_ref, floor_ref, top_k_ref, top_p_ref, temp_ref, key0_ref, key1_ref, x_ref, _tokens_in,
            out_ref, *, v: int, bv: int):
    r = pl.program_id(0)
    nblk = -(-v // bv)
    lane = jnp.arange(bv, dtype=jnp.int32)

    def load(i):
        ids = i * bv + lane
        valid = ids < v
        # index arrays, not a slice: interpret mode clamps a slice that runs past the end
        idx = (jnp.full((bv,), r, jnp.int32), jnp.minimum(ids, v - 1))
        xs = plgpu.load(x_ref.at[idx], mask=valid, other=NEG_INF)
        return ids, valid, xs

    def total(fn, init):
        return lax.fori_loop(0, nblk, lambda i, acc: acc + fn(*load(i)), init)

    digits = jnp.arange(1 << RADIX_BITS, dtype=jnp.uint32)

    def select(weight, target):
        """Largest key t (uint32) with sum(weight[key >= t]) >= target; digit 0 (the current t) always passes."""
        def step(it, t):
            shift = (32 - RADIX_BITS * (it + 1)).astype(jnp.uint32)
            cands = t | (digits << shift)

            def mass(ids, valid, xs):
                w = weight(valid, xs)
                return jnp.sum(jnp.where(sortable(xs)[None, :] >= cands[:, None], w[None, :], 0.0), axis=1)

            m = total(mass, jnp.zeros(digits.shape, jnp.float32))
            digit = jnp.sum(((m >= target) & (digits > 0)).astype(jnp.uint32))
            return t | (digit << shift)

        return lax.fori_loop(0, 32 // RADIX_BITS, step, jnp.uint32(0))

    @pl.when(rows_ref[r] != 0)
    def _():
        top_k, top_p, temp = top_k_ref[r], top_p_ref[r], temp_ref[r]
        row_max = lax.fori_loop(0, nblk, lambda i, acc: jnp.maximum(acc, jnp.max(load(i)[2])), NEG_INF)
        row_max = jnp.where(row_max > NEG_INF, row_max, 0.0)
        floor = sortable(floor_ref[r])
        # each search only where its filter is on: a top-p row drawn here skips the top-k search, and back
        t_b = lax.cond(top_k < v, lambda: _umax(floor, select(lambda valid, xs: valid.astype(jnp.float32),
                                                              top_k.astype(jnp.float32))), lambda: floor)

        def probs(valid, xs):
            return jnp.where(valid & (sortable(xs) >= t_b), jnp.exp((xs - row_max) / temp), 0.0)

        def top_p_threshold():
            z = total(lambda ids, valid, xs: jnp.sum(probs(valid, xs)), jnp.float32(0.0))
            return _umax(t_b, select(probs, top_p * z))

        t = lax.cond(top_p < 1.0, top_p_threshold, lambda: t_b)
        key0, key1 = key0_ref[r], key1_ref[r]

        def best(i, carry):
            ids, valid, xs = load(i)
            noisy = xs / temp + gumbel(ids.astype(jnp.uint32), key0, key1)
            zs = jnp.where(valid & (sortable(xs) >= t), noisy, NEG_INF)
            bz = jnp.max(zs)
            bi = jnp.min(jnp.where(zs == bz, ids, v))
            better = bz > carry[0]
            return jnp.where(better, bz, carry[0]), jnp.where(better, bi, carry[1])

        _, token = lax.fori_loop(0, nblk, best, (jnp.float32(NEG_INF), jnp.int32(0)))
        out_ref[r] = token


def exact_rows_pallas(x, rows, floor, top_k, top_p, temperature, keys, tokens, *, interpret: bool = False):
    """x [S, V] f32 processed logits; rows [S] bool (which rows to draw); floor [S] f32 (min_p threshold);
    top_k [S] i32 (V = off); top_p [S] f32; temperature [S] f32; keys [S, 2] u32 (row keys of the noise);
    tokens [S] i32 -> tokens with the selected rows replaced by their exact draw."""
    s, v = x.shape
    kernel = functools.partial(_kernel, v=v, bv=min(BLOCK_V, pl.next_power_of_2(v)))
    args = (rows.astype(jnp.int32), floor.astype(jnp.float32), top_k.astype(jnp.int32),
            top_p.astype(jnp.float32), temperature.astype(jnp.float32), keys[:, 0], keys[:, 1],
            x.astype(jnp.float32), tokens.astype(jnp.int32))
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((s,), jnp.int32),
        grid=(s,),
        input_output_aliases={len(args) - 1: 0},
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        name="exact_truncated_sampling",
    )(*args)
