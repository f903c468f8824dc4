"""Fused int4 weight-only matmul as a Pallas kernel lowered through Triton (NVIDIA sm_80+; interpret on CPU).

Computes ``x [M, K] @ W [K, N]`` from the packed layout of reference.py without writing a dequantized W
anywhere: each program owns a [BM, BN] output tile and walks its share of K in steps of BK. Per step it loads
x [BM, BK], the packed rows of W that hold those BK input channels ([BK, BN] int32, row k reads packed row
k // 8, so each int32 is fetched from HBM once and re-read from L1 by the 8 rows it feeds, as in the classic
Triton GPTQ kernel), shifts out nibble k % 8, subtracts the group's zero, multiplies by the group's scale in
float32, casts to x.dtype and feeds the tensor cores; accumulation is float32. BK divides the group size, so
one (scale, zero) row serves a whole step.

``split_dot`` variant (BK >= 128): loads the packed tile itself ([BK / 8, BN], each int32 once) and does 8 dots
of K = BK / 8: dot j takes nibble j of every packed row (input channels k0 + 8r + j). The wrapper permutes x's
columns inside each BK block to (nibble, packed row) order, so dot j reads a contiguous [BM, BK / 8] slice of x
(pipelined copies; a strided gather of x here was not). ``joined`` (with split_dot): the 8 dequantized nibble
tiles are joined back into one [BK, BN] tile in channel order (2-way joins + a transpose, all the Triton
lowering offers) for one dot per step with unpermuted x: one wgmma per step at 64+ rows, where the 8 small
dots of split_dot spill. Groups smaller than BK are handled per packed row (the group of channels 8r..8r+7 is
(k0 + 8r) // G).

Dequantization (all variants): a nibble q is OR-ed into the mantissa of float32 128.0 (giving 128 + q with no
int -> float convert) and (q - z) * s is one exact fused multiply-add with the per-group constant
-(128 + z) * s (MAGIC_128). Read back as SASS (sm_90, local triton 3.6), this replaces the I2F, the integer
subtract and the multiply per weight.

Which variant wins is measured by scripts/bench_quant_matmul.py; ``plan`` picks per M (``_variant``) and
``plan(..., variant="gather"|"split"|"joined")`` forces one (``LLM(int4_kernel_variant=...)``).

Split-K: with few output tiles (decode: M <= 16, N = 4096 gives 64 programs on 132 SMs) the K loop is split
over grid axis 2 into float32 partials [S, M, N] that a jnp sum reduces (S * M * N * 4 bytes, tiny next to W).

Padding: M is padded to a multiple of BM by the wrapper (zero rows, dropped after); N must be a multiple of
BN and K of BK * S (``plan`` picks tiles that divide, or says None and the dispatcher uses the reference).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from .reference import PACK, check_int4_operands


@dataclasses.dataclass(frozen=True)
class Int4Tiles:
    """Static tile shape: BM x BN output tile, BK input channels per step, K split into ``num_splits``."""
    block_m: int
    block_n: int
    block_k: int
    num_splits: int = 1
    num_warps: int = 4
    num_stages: int = 3
    split_dot: bool = False  # 8 dots over the nibbles of a packed tile (see the module docstring)
    joined: bool = False  # with split_dot: the 8 dequantized nibble tiles joined into one [BK, BN] tile, one dot

    def fits(self, k: int, n: int, group_size: int) -> bool:
        """Whether these tiles divide K (per split), N and the groups."""
        if n % self.block_n or k % (self.block_k * self.num_splits):
            return False
        if self.split_dot:
            return self.block_k >= 128 and (group_size % self.block_k == 0 or self.block_k % group_size == 0)
        return group_size % self.block_k == 0


VARIANTS = ("gather", "split", "joined")


def _variant(m: int, forced: str | None) -> str:
    """``forced`` (one of VARIANTS) or the measured choice for M rows: split_dot (8 mma.sync dots on the unpacked
    nibble tiles) up to 16 rows, joined (one wgmma per step) above."""
    if forced is not None and forced not in VARIANTS:
        raise ValueError(f"int4 kernel variant {forced!r} is not supported; choose one of {list(VARIANTS)}")
    return forced or ("split" if m <= 16 else "joined")


def plan(m: int, k: int, n: int, group_size: int, num_cores: int = 132,
         variant: str | None = None) -> Int4Tiles | None:
    """Tiles for one shape, or None when no tile divides it (the caller falls back to the reference).

    Small M (decode) is memory bound: narrow N tiles and split-K until ~2 programs per SM. Larger M uses
    wider tiles (each W tile then feeds more rows). The split_dot / joined variants need BK = 128 dividing K per
    split and groups that are multiples or divisors of 128; shapes they do not fit get the gather tiles."""
    block_k = next((b for b in (128, 64, 32) if group_size % b == 0 and k % b == 0), None)
    if block_k is None:
        return None
    variant = _variant(m, variant)
    block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
    # gather tiles: 128 columns from 64 rows; joined / split: 64 columns (more programs). At 64 rows on the H200,
    # sustained timing puts 64 and 128 columns level (gate_up 93 vs 91 us, down 51 vs 50)
    block_n = 128 if variant == "gather" and block_m == 64 else 64
    if n % block_n:
        block_n = next((b for b in (64, 32, 16) if n % b == 0), 0)
        if not block_n:
            return None
    programs = -(-m // block_m) * (n // block_n)
    steps = k // block_k
    # Split K until ~2 programs per SM; above 16 rows keep >= 8 K steps per split (a shorter loop never fills
    # the copy pipeline: q_o at 64 rows, 2 steps per split, lost to XLA's GEMM).
    min_steps = 1 if m <= 16 else 8
    splits = 1
    while (splits < 16 and programs * splits < 2 * num_cores and steps % (2 * splits) == 0
           and steps // (2 * splits) >= min_steps):
        splits *= 2
    warps = 4
    if variant != "gather":
        # joined tiles without split-K (wide N: gate_up) pipeline 4 copies deep. Measured at 64 rows on the H200
        # with sustained timing: gate_up 93 vs 96 us at 3 stages; with splits
        # mixed (down 50 vs 51 us, q_o 17.5 vs 19.4, k_v 21.8 vs 12.1), so those keep 3
        stages = 4 if variant == "joined" and splits == 1 else 3
        fast = Int4Tiles(block_m, block_n, 128, splits, warps, stages, split_dot=True, joined=variant == "joined")
        if fast.fits(k, n, group_size):
            return fast
    return Int4Tiles(block_m, block_n, block_k, splits, warps)


# float32 128.0. Its mantissa bit 16 weighs exactly 1, so OR-ing a nibble q into bits 16..19 gives 128 + q with
# no int -> float convert; (128 + q) * s - (128 + z) * s is then one fused multiply-add, exact: s is a float16
# (11 significant bits) and 128 + z < 2^8, so the constant (128 + z) * s and the result fit float32's 24 bits.
MAGIC_128 = 0x43000000
NIBBLE_AT_16 = 0xF0000


def _nibbles_as_f32(packed, nib):
    """128 + nibble ``nib`` (0..7) of every int32 of ``packed``, as float32: one shift and one LOP3 per value
    (none for nibble 4, already at bit 16). ``nib`` may be an int32 array that broadcasts against ``packed``."""
    if isinstance(nib, int):
        shift = 4 * nib - 16
        moved = packed >> shift if shift > 0 else (packed << -shift if shift < 0 else packed)
    else:  # per-row nibble (gather variant): right then left, both by amounts in 0..28 / 16
        moved = (packed >> (4 * nib)) << 16
    return lax.bitcast_convert_type((moved & NIBBLE_AT_16) | MAGIC_128, jnp.float32)


def _interleave_nibble_tiles(ws):
    """8 tiles [R, BN] (tile j: input channels 8r + j) -> [8R, BN] in channel order, with 2-way joins only (the
    Triton lowering's one stacking primitive): join j with j+4, then j with j+2, then j with j+1, so the
    flattened joined axes read 4*j2 + 2*j1 + j0 = j."""
    a = [jnp.stack([ws[j], ws[j + 4]], axis=-1) for j in range(4)]  # [R, BN, 2]
    b = [jnp.stack([a[j], a[j + 2]], axis=-1) for j in range(2)]  # [R, BN, 2, 2]
    c = jnp.stack([b[0], b[1]], axis=-1)  # [R, BN, 2, 2, 2]
    r, bn = ws[0].shape
    return c.reshape(r, bn, PACK).transpose(0, 2, 1).reshape(r * PACK, bn)


def _scale_and_offset(scales, zeros):
    """Per-group float32 (s, -(128 + z) * s): w = (128 + q) * s + offset = (q - z) * s, exactly (see MAGIC_128)."""
    s = scales.astype(jnp.float32)
    return s, -(zeros.astype(jnp.float32) + 128.0) * s


def _rows2d(rows, cols):
    """Index arrays (both [R, C]) gathering rows ``rows`` [R] x columns ``cols`` [C] of a 2-D ref (interpret
    mode cannot mix an index array with a slice)."""
    shape = (rows.shape[0], cols.shape[0])
    return jnp.broadcast_to(rows[:, None], shape), jnp.broadcast_to(cols[None, :], shape)


def _kernel(x_ref, qw_ref, s_ref, z_ref, o_ref, *, tiles: Int4Tiles, group_size: int, steps: int, m_pad: int):
    """Program (i, j, s): output rows [i*BM, +BM), columns [j*BN, +BN), K steps [s*steps, +steps); the split's
    partial goes to rows s*M_pad + ... of the [S * M_pad, N] output."""
    bm, bn, bk = tiles.block_m, tiles.block_n, tiles.block_k
    i, j, sp = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    m0, n0 = i * bm, j * bn
    cols = n0 + jnp.arange(bn, dtype=jnp.int32)
    offs_k = jnp.arange(bk, dtype=jnp.int32)
    nibble = lax.rem(offs_k, jnp.int32(PACK))  # [BK]

    def step(t, acc):
        k0 = (sp * steps + t) * bk
        x = x_ref[pl.ds(m0, bm), pl.ds(k0, bk)]  # [BM, BK]
        packed = qw_ref[_rows2d(lax.div(k0 + offs_k, jnp.int32(PACK)), cols)]  # [BK, BN] int32
        g = lax.div(k0, jnp.int32(group_size))
        scale, offset = _scale_and_offset(s_ref[pl.ds(g, 1), pl.ds(n0, bn)], z_ref[pl.ds(g, 1), pl.ds(n0, bn)])
        w = (_nibbles_as_f32(packed, nibble[:, None]) * scale + offset).astype(x.dtype)  # [BK, BN]
        return acc + plgpu.dot(x, w)

    def split_step(t, acc):
        k0 = (sp * steps + t) * bk
        r = jnp.arange(bk // PACK, dtype=jnp.int32)
        packed = qw_ref[pl.ds(lax.div(k0, jnp.int32(PACK)), bk // PACK), pl.ds(n0, bn)]  # [BK/8, BN]
        if group_size >= bk:
            g = lax.div(k0, jnp.int32(group_size))
            scale, offset = _scale_and_offset(s_ref[pl.ds(g, 1), pl.ds(n0, bn)],
                                              z_ref[pl.ds(g, 1), pl.ds(n0, bn)])  # [1, BN]
        else:  # several groups per step: the group of packed row r
            grows = lax.div(k0 + PACK * r, jnp.int32(group_size))
            scale, offset = _scale_and_offset(s_ref[_rows2d(grows, cols)], z_ref[_rows2d(grows, cols)])  # [BK/8, BN]
        if tiles.joined:
            ws = [(_nibbles_as_f32(packed, nib) * scale + offset).astype(x_ref.dtype) for nib in range(PACK)]
            return acc + plgpu.dot(x_ref[pl.ds(m0, bm), pl.ds(k0, bk)], _interleave_nibble_tiles(ws))
        for nib in range(PACK):
            w = (_nibbles_as_f32(packed, nib) * scale + offset).astype(x_ref.dtype)
            xj = x_ref[pl.ds(m0, bm), pl.ds(k0 + nib * (bk // PACK), bk // PACK)]  # channels k0 + 8r + nib
            acc = acc + plgpu.dot(xj, w)
        return acc

    acc = lax.fori_loop(0, steps, split_step if tiles.split_dot else step, jnp.zeros((bm, bn), jnp.float32))
    o_ref[pl.ds(sp * m_pad + m0, bm), pl.ds(n0, bn)] = acc.astype(o_ref.dtype)


def int4_matmul_pallas(x: jax.Array, qweight, scales, zeros, out_dtype=None, *, tiles: Int4Tiles | None = None,
                       interpret: bool = False) -> jax.Array:
    """Same contract as ``int4_matmul_reference``: x [M, K] -> [M, N] in ``out_dtype`` (default x.dtype).
    Raises ValueError when the shape has no valid tiling (``plan`` returned None)."""
    k, n, group_size = check_int4_operands(x, qweight, scales, zeros)
    m = x.shape[0]
    tiles = tiles or plan(m, k, n, group_size)
    if tiles is None:
        raise ValueError(f"no int4 tiling for M={m}, K={k}, N={n}, group size {group_size}")
    bm, bn, bk, splits = tiles.block_m, tiles.block_n, tiles.block_k, tiles.num_splits
    if not tiles.fits(k, n, group_size):
        raise ValueError(f"tiles {tiles} do not fit K={k}, N={n}, group size {group_size}")
    m_pad = -(-m // bm) * bm
    if m_pad != m:
        x = jnp.pad(x, ((0, m_pad - m), (0, 0)))
    steps = k // (bk * splits)
    if tiles.split_dot and not tiles.joined:  # x columns per BK block in (nibble, packed row) order: dot j's slice
        x = x.reshape(m_pad, k // bk, bk // PACK, PACK).swapaxes(2, 3).reshape(m_pad, k)
    kernel = functools.partial(_kernel, tiles=tiles, group_size=group_size, steps=steps, m_pad=m_pad)
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    partial_dtype = jnp.float32 if splits > 1 else out_dtype
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((splits * m_pad, n), partial_dtype),
        grid=(m_pad // bm, n // bn, splits),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=tiles.num_warps, num_stages=tiles.num_stages),
        name=(f"int4_matmul_bm{bm}_bn{bn}_bk{bk}_s{splits}_st{tiles.num_stages}"
              f"{'_joined' if tiles.joined else ('_split' if tiles.split_dot else '')}"),
    )(x, qweight, scales, zeros)
    out = out if splits == 1 else jnp.sum(out.reshape(splits, m_pad, n), axis=0)
    return out[:m].astype(out_dtype)
