"""Grouped matmul as a Pallas kernel lowered through Triton (NVIDIA sm_80+; interpret mode on the CPU for tests).

Why: XLA's GPU lowering of ``jax.lax.ragged_dot`` in jaxlib 0.10 multiplies every row by every group's weight
(G times the FLOPs: 128x for Qwen3-30B-A3B's experts), see NOTES.md. This kernel does the work of the groups only.

Layout (as vLLM's fused-MoE ``moe_align_block_size``; layout.py): lhs comes in a tile-aligned slot order where
each tile of BM slots belongs to one group g (a group's last tile is padded with rows whose results are never
read). The grid is (tiles, N / BN); program (t, j) loads slots [t*BM, +BM) of lhs, walks K in steps of BK against
rows [g*K + k0, +BK) of rhs viewed as [G*K, N], accumulates in float32 and writes the same slots of the output, so
no load or store needs a mask and lhs needs no padded copy. Tiles past the last group skip their work
(``pl.when``). A MoE layer builds the slot order once and keeps its rows in it through both grouped matmuls
(``grouped_matmul_tiles``); ``grouped_matmul_pallas`` serves contiguous rows by gathering them in and out.
rhs may be in a narrower dtype than lhs (fp8 / int8 experts): each [BK, BN] tile is converted in registers, so
the weights are read from HBM at their own width, and their per-channel scales are applied before the store.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from .layout import GroupedLayout, grouped_layout
from .reference import check_grouped_operands, row_groups


@dataclasses.dataclass(frozen=True)
class GroupedTiles:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


def plan(m: int, k: int, n: int, num_groups: int) -> GroupedTiles | None:
    """Tiles for one shape, or None when no tile divides K and N (the dispatcher then uses ragged_dot). BM follows
    the average rows per group: decode steps put few rows on each expert, and a mostly empty 64-row tile wastes
    the tensor cores' work but not HBM traffic, which bounds those steps."""
    block_k = next((b for b in (64, 32, 16) if k % b == 0), None)
    block_n = next((b for b in (128, 64, 32, 16) if n % b == 0), None)
    if block_k is None or block_n is None:
        return None
    avg = m / max(num_groups, 1)
    block_m = 16 if avg <= 16 else (32 if avg <= 32 else 64)
    return GroupedTiles(block_m, block_n, block_k)


def _kernel(tile_group_ref, lhs_ref, rhs_ref, *refs, tiles: GroupedTiles, k: int, scaled: bool,
            up_offset: int | None, biased: bool = False, clamp: tuple[float, float] | None = None):
    """Program (t, j): slots [t*BM, +BM) of lhs and out (one group's tile), output columns [j*BN, +BN).
    up_offset None: those columns of the product. Else (SwiGLU): rhs columns [j*BN, +BN) are the gate and
    [up_offset + j*BN, +BN) the up projection, and the program writes silu(gate) * up, or with ``clamp``
    (alpha, limit) gpt-oss's (clip(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit).
    ``biased``: the group's bias row (float32 [G, N]) is added to the (scaled) product first."""
    refs = list(refs)
    scale_ref = refs.pop(0) if scaled else None
    bias_ref = refs.pop(0) if biased else None
    (out_ref,) = refs
    bm, bn, bk = tiles.block_m, tiles.block_n, tiles.block_k
    t, j = pl.program_id(0), pl.program_id(1)
    group = tile_group_ref[t]
    halves = (0,) if up_offset is None else (0, up_offset)

    @pl.when(group >= 0)
    def _():
        row0, n0 = pl.multiple_of(t * bm, bm), pl.multiple_of(j * bn, bn)

        def step(s, accs):
            k0 = pl.multiple_of(s * bk, bk)
            x = lhs_ref[pl.ds(row0, bm), pl.ds(k0, bk)]
            # float32 models keep float32 products (no TF32), as XLA's default dot does for parity with HF
            return tuple(acc + plgpu.dot(x, rhs_ref[pl.ds(group * k + k0, bk), pl.ds(c0 + n0, bn)].astype(x.dtype),
                                         allow_tf32=x.dtype != jnp.float32) for acc, c0 in zip(accs, halves))

        accs = lax.fori_loop(0, k // bk, step, tuple(jnp.zeros((bm, bn), jnp.float32) for _ in halves))
        if scaled:  # fp8 / int8 experts: each output channel's scale, applied in float32
            accs = tuple(acc * scale_ref[pl.ds(group, 1), pl.ds(c0 + n0, bn)] for acc, c0 in zip(accs, halves))
        if biased:
            accs = tuple(acc + bias_ref[pl.ds(group, 1), pl.ds(c0 + n0, bn)] for acc, c0 in zip(accs, halves))
        if up_offset is None:
            out = accs[0]
        elif clamp is None:  # silu(gate) * up in float32, rounded once
            gate, up = accs
            out = gate / (1.0 + jnp.exp(-gate)) * up
        else:
            alpha, limit = clamp
            gate, up = jnp.minimum(accs[0], limit), jnp.clip(accs[1], -limit, limit)
            out = (up + 1.0) * gate / (1.0 + jnp.exp(-alpha * gate))
        out_ref[pl.ds(row0, bm), pl.ds(n0, bn)] = out.astype(out_ref.dtype)


def _tiles_for(layout: GroupedLayout, k: int, n: int, g: int, swiglu: bool) -> GroupedTiles | None:
    """The planned tiles of an [S, K] x [K, N] product (N: the output width) at the layout's block_m. SwiGLU
    keeps two accumulators, so its column tile is at most 64 (the registers of one 128-wide accumulator)."""
    planned = plan(layout.num_slots, k, n, g)
    if planned is None:
        return None
    block_n = min(planned.block_n, 64) if swiglu else planned.block_n
    return dataclasses.replace(planned, block_m=layout.block_m, block_n=block_n)


def grouped_matmul_tiles(lhs: jax.Array, rhs: jax.Array, layout: GroupedLayout, out_dtype, *,
                         scale: jax.Array | None = None, swiglu: bool = False, tiles: GroupedTiles | None = None,
                         interpret: bool = False, bias: jax.Array | None = None,
                         clamp: tuple[float, float] | None = None) -> jax.Array:
    """lhs [S, K] in ``layout``'s slot order, rhs [G, K, N], scale None or float32 [G, N] -> [S, N] out_dtype:
    slot s of group g gets ``p = (lhs[s] @ rhs[g]) * scale[g] + bias[g]`` (bias None or [G, N]); with ``swiglu``
    (rhs columns: gate, then up) [S, N/2] ``silu(p[:N/2]) * p[N/2:]``, or gpt-oss's clamped form with ``clamp``
    (alpha, limit; see _kernel). Slots past the last group's tiles are left unwritten (any value: never read).
    ValueError when no tiling fits the shape or the layout's block_m."""
    g, k, n = rhs.shape
    width = n // 2 if swiglu else n
    tiles = tiles or _tiles_for(layout, k, width, g, swiglu)
    if (tiles is None or k % tiles.block_k or width % tiles.block_n or tiles.block_m != layout.block_m
            or (swiglu and n % 2)):
        raise ValueError(f"no grouped-matmul tiling for K={k}, N={n}, block_m={layout.block_m} (tiles {tiles})")
    if lhs.shape != (layout.num_slots, k):
        raise ValueError(f"grouped matmul: lhs {lhs.shape} is not [{layout.num_slots}, {k}] (the layout's slots)")
    scaled, biased = scale is not None, bias is not None
    operands = (layout.tile_group, lhs, rhs.reshape(g * k, n)) + ((scale.astype(jnp.float32),) if scaled else ())
    operands += (bias.astype(jnp.float32).reshape(g, n),) if biased else ()
    return pl.pallas_call(
        functools.partial(_kernel, tiles=tiles, k=k, scaled=scaled, up_offset=width if swiglu else None,
                          biased=biased, clamp=None if clamp is None else tuple(map(float, clamp))),
        out_shape=jax.ShapeDtypeStruct((layout.num_slots, width), out_dtype),
        grid=(layout.tile_group.shape[0], width // tiles.block_n),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=tiles.num_warps, num_stages=tiles.num_stages),
        name=f"grouped_matmul{'_swiglu' if swiglu else ''}_bm{tiles.block_m}_bn{tiles.block_n}_bk{tiles.block_k}",
    )(*operands)


def grouped_matmul_pallas(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, preferred_element_type=None,
                          *, tiles: GroupedTiles | None = None, interpret: bool = False) -> jax.Array:
    """Same contract as ``grouped_matmul_reference`` ([M, N]; rows past the groups are zeros): the rows are
    gathered into the tile-aligned slot order, multiplied, and gathered back. ValueError when no tiling fits."""
    check_grouped_operands(lhs, rhs, group_sizes)
    m, k = lhs.shape
    g, _, n = rhs.shape
    tiles = tiles or plan(m, k, n, g)
    if tiles is None:
        raise ValueError(f"no grouped-matmul tiling for K={k}, N={n} (tiles {tiles})")
    layout = grouped_layout(group_sizes, m, tiles.block_m)
    out_dtype = jnp.dtype(preferred_element_type or lhs.dtype)
    slotted = jnp.take(lhs, layout.source_rows(), axis=0, mode="clip")
    out = grouped_matmul_tiles(slotted, rhs, layout, out_dtype, tiles=tiles, interpret=interpret)
    groups = row_groups(group_sizes, m)
    slots = layout.slots(jnp.arange(m, dtype=jnp.int32), groups)
    return jnp.where((groups < g)[:, None], jnp.take(out, slots, axis=0, mode="clip"), jnp.zeros((), out_dtype))
