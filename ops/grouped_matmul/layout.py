"""Where each group's rows sit when every group starts on a tile boundary: the layout a MoE layer computes once
and shares between its two grouped matmuls (gate_up, down), which have the same groups.

Rows sorted by group (the contiguous order: group g owns rows [group_start[g], +group_sizes[g])) are placed in
``num_slots`` slots, group g at slots [slot_start[g], +group_sizes[g]) with slot_start a multiple of block_m, so
each tile of block_m slots belongs to one group (``tile_group``; -1 for tiles past the last group). The Pallas
kernel then reads and writes whole tiles with no masks and no padded copy of its input; the padding slots hold any
row (computed, never read back). ``num_slots`` is static: cdiv(M + G*(block_m - 1), block_m) tiles bound the
tiles of any group sizes; block_m = 1 is the contiguous order itself.

Everything here is a compare-and-sum over [G] or [tiles] x [G] (one fused reduction each): no cumsum, whose
reduce_window lowers on the GPU to a multi-level scan of pads and adds, and no searchsorted (an XLA while loop).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def count_at_or_below(ends: jax.Array, n: int) -> jax.Array:
    """[n] int32: for each i in range(n), how many entries of ``ends`` are <= i; for sorted ``ends`` that is
    ``jnp.searchsorted(ends, arange(n), side="right")``. One [n, len(ends)] compare-and-sum."""
    i = jnp.arange(n, dtype=jnp.int32)
    return jnp.sum(ends.astype(jnp.int32)[None, :] <= i[:, None], axis=1, dtype=jnp.int32)


def exclusive_prefix(values: jax.Array) -> jax.Array:
    """[G] int32: sum of values[h] over h < g (a [G, G] masked sum: G is the expert count, small)."""
    g = jnp.arange(values.shape[0], dtype=jnp.int32)
    return jnp.sum(jnp.where(g[None, :] < g[:, None], values.astype(jnp.int32)[None, :], 0), axis=1,
                   dtype=jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GroupedLayout:
    """See the module docstring. Arrays int32; G groups; tiles = num_slots / block_m."""

    group_sizes: jax.Array  # [G] rows of each group
    group_start: jax.Array  # [G] first row of each group in the contiguous order
    slot_start: jax.Array  # [G] first slot of each group (a multiple of block_m)
    tile_group: jax.Array  # [tiles] group of each tile of block_m slots, -1 past the last group
    block_m: int = dataclasses.field(metadata={"static": True})

    @property
    def num_slots(self) -> int:
        return self.tile_group.shape[0] * self.block_m

    @property
    def padded_sizes(self) -> jax.Array:
        """[G] slots of each group (its rows rounded up to whole tiles): the group sizes of the slot order."""
        return (self.group_sizes + self.block_m - 1) // self.block_m * self.block_m

    def slot_group(self) -> jax.Array:
        """[num_slots] group of each slot (-1 past the last group)."""
        tiles = self.tile_group.shape[0]
        return jnp.broadcast_to(self.tile_group[:, None], (tiles, self.block_m)).reshape(self.num_slots)

    def source_rows(self) -> jax.Array:
        """[num_slots] the contiguous-order row each slot holds; padding slots point at row 0 (any row will do:
        their results are never read back)."""
        s = jnp.arange(self.num_slots, dtype=jnp.int32)
        g = self.slot_group()
        gc = jnp.maximum(g, 0)
        rank = s - self.slot_start[gc]
        valid = (g >= 0) & (rank < self.group_sizes[gc])
        return jnp.where(valid, self.group_start[gc] + rank, 0)

    def slots(self, rows: jax.Array, groups: jax.Array) -> jax.Array:
        """The slot of each contiguous-order row ``rows`` of group ``groups`` (same shape; groups >= G: slot 0)."""
        num_groups = self.group_sizes.shape[0]
        gc = jnp.minimum(groups, num_groups - 1)
        return jnp.where(groups < num_groups, self.slot_start[gc] + rows - self.group_start[gc], 0)


def grouped_layout(group_sizes: jax.Array, num_rows: int, block_m: int) -> GroupedLayout:
    """The layout of ``num_rows`` rows (an upper bound of sum(group_sizes)) in groups of ``group_sizes`` [G]."""
    g = group_sizes.shape[0]
    sizes = group_sizes.astype(jnp.int32)
    tiles_per_group = (sizes + block_m - 1) // block_m
    tile_first = exclusive_prefix(tiles_per_group)
    num_tiles = -(-(num_rows + g * (block_m - 1)) // block_m)
    tile_group = count_at_or_below(tile_first + tiles_per_group, num_tiles)  # g: past the last group
    return GroupedLayout(group_sizes=sizes, group_start=exclusive_prefix(sizes), slot_start=tile_first * block_m,
                         tile_group=jnp.where(tile_group < g, tile_group, -1), block_m=block_m)
