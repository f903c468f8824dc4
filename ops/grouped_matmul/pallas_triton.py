"""Grouped matmul as a Pallas kernel lowered through Triton (NVIDIA sm_80+; interpret mode on the CPU for tests).

Why: XLA's GPU lowering of ``jax.lax.ragged_dot`` in jaxlib 0.10 multiplies every row by every group's weight
(G times the FLOPs: 128x for Qwen3-30B-A3B's experts), see NOTES.md. This kernel does the work of the groups only.

Layout (as vLLM's fused-MoE ``moe_align_block_size``): each group's rows are split into tiles of BM rows; tile t
belongs to one group g and covers its rows [start, start + BM) (the last tile of a group is partial). The grid is
(tiles, N / BN); program (t, j) loads its BM rows of lhs (rows past the group's end are other groups' rows or
padding: computed, never read back), walks K in steps of BK against rows [g*K + k0, +BK) of rhs viewed as
[G*K, N], accumulates in float32, and writes output rows [t*BM, +BM) of a tile-aligned buffer, so no two programs
write the same row and no store needs a mask. The wrapper then gathers every real row from its tile slot.
``tiles`` is static: cdiv(M, BM) + G bounds the tiles of any group sizes; tiles past the last group skip their
work (``pl.when``). rhs may be in a narrower dtype than lhs (fp8 / int8 experts): each [BK, BN] tile is converted
in registers, so the weights are read from HBM at their own width.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from .reference import check_grouped_operands, count_at_or_below, row_groups


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


def tile_map(group_sizes: jax.Array, num_rows: int, block_m: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(tile_group [tiles] int32 (-1: unused tile), tile_row [tiles] int32 first lhs row of each tile,
    slot [M] int32 row of each lhs row in the tile-aligned output (rows past the groups: slot 0, zeroed later))."""
    g = group_sizes.shape[0]
    sizes = group_sizes.astype(jnp.int32)
    tiles_per_group = (sizes + block_m - 1) // block_m
    tile_end = jnp.cumsum(tiles_per_group)
    tile_first = tile_end - tiles_per_group
    group_start = jnp.cumsum(sizes) - sizes
    num_tiles = -(-num_rows // block_m) + g
    t = jnp.arange(num_tiles, dtype=jnp.int32)
    tg = count_at_or_below(tile_end, num_tiles)  # group of each tile (g: unused)
    tgc = jnp.minimum(tg, g - 1)
    tile_row = jnp.where(tg < g, group_start[tgc] + (t - tile_first[tgc]) * block_m, 0)
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    rg = jnp.minimum(row_groups(sizes, num_rows), g - 1)
    slot = tile_first[rg] * block_m + rows - group_start[rg]
    return jnp.where(tg < g, tg, -1), tile_row, slot


def _kernel(tile_group_ref, tile_row_ref, lhs_ref, rhs_ref, out_ref, *, tiles: GroupedTiles, k: int):
    """Program (t, j): output slots [t*BM, +BM), columns [j*BN, +BN)."""
    bm, bn, bk = tiles.block_m, tiles.block_n, tiles.block_k
    t, j = pl.program_id(0), pl.program_id(1)
    group = tile_group_ref[t]

    @pl.when(group >= 0)
    def _():
        row0, n0 = tile_row_ref[t], j * bn

        def step(s, acc):
            k0 = s * bk
            x = lhs_ref[pl.ds(row0, bm), pl.ds(k0, bk)]
            w = rhs_ref[pl.ds(group * k + k0, bk), pl.ds(n0, bn)].astype(x.dtype)
            # float32 models keep float32 products (no TF32), as XLA's default dot does for parity with HF
            return acc + plgpu.dot(x, w, allow_tf32=x.dtype != jnp.float32)

        acc = lax.fori_loop(0, k // bk, step, jnp.zeros((bm, bn), jnp.float32))
        out_ref[pl.ds(t * bm, bm), pl.ds(n0, bn)] = acc.astype(out_ref.dtype)


def grouped_matmul_pallas(lhs: jax.Array, rhs: jax.Array, group_sizes: jax.Array, preferred_element_type=None,
                          *, tiles: GroupedTiles | None = None, interpret: bool = False) -> jax.Array:
    """Same contract as ``grouped_matmul_reference`` ([M, N]; rows past the groups are zeros). ValueError when
    no tiling fits the shape."""
    check_grouped_operands(lhs, rhs, group_sizes)
    m, k = lhs.shape
    g, _, n = rhs.shape
    tiles = tiles or plan(m, k, n, g)
    if tiles is None or k % tiles.block_k or n % tiles.block_n:
        raise ValueError(f"no grouped-matmul tiling for K={k}, N={n} (tiles {tiles})")
    bm = tiles.block_m
    tile_group, tile_row, slot = tile_map(group_sizes, m, bm)
    num_tiles = tile_group.shape[0]
    out_dtype = jnp.dtype(preferred_element_type or lhs.dtype)
    padded = pl.pallas_call(
        functools.partial(_kernel, tiles=tiles, k=k),
        out_shape=jax.ShapeDtypeStruct((num_tiles * bm, n), out_dtype),
        grid=(num_tiles, n // tiles.block_n),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=tiles.num_warps, num_stages=tiles.num_stages),
        name=f"grouped_matmul_bm{bm}_bn{tiles.block_n}_bk{tiles.block_k}",
    )(tile_group, tile_row, jnp.pad(lhs, ((0, bm), (0, 0))), rhs.reshape(g * k, n))
    in_group = row_groups(group_sizes, m) < g
    return jnp.where(in_group[:, None], jnp.take(padded, slot, axis=0), jnp.zeros((), out_dtype))
