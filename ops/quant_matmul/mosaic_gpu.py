"""int4 weight-only matmul for Hopper in Mosaic GPU (Pallas' TMA/wgmma backend): the weight as the register
operand of the wgmma, Machete-style.

Why this shape of kernel: at decode rows (M <= 64) the product is bound by reading the weight, and our Triton
kernel (pallas_triton.py) stalls on a serialized dequantize -> shared store -> wgmma chain at ~0.7 TB/s of packed
weight (docs/quantization.md). Here the product is computed transposed, ``y^T [N, M] = W^T [N, K] @ x^T``:

* the int4 weight tile ``W^T[n, k]`` goes global -> shared by TMA, shared -> registers, is upcast to bf16 and
  dequantized in registers and fed to the wgmma as its A operand (no shared-memory round trip of the bf16 tile);
* x's tile ``[tm, tk]`` (tm = the token rows, the wgmma's N) stays in shared memory as the B operand;
* a warp-specialized pipeline: one warpgroup issues the TMA copies, two compute warpgroups each own 64 weight
  rows of a 128-row CTA tile, so one's dequantization overlaps the other's wgmma;
* persistent CTAs loop over (weight tile, token tile, K split) work units; with split-K the float32 partials are
  summed by XLA (decode shapes with few output rows, e.g. down_proj's N = 4096, fill the GPU that way);
* the epilogue writes y [M, N], not y^T: the accumulator is relaid out in registers and stored through a
  transposed view of a [tm, 64] shared tile (an XLA transpose of y^T costs 0.71 ms a decode step in Llama-8B AWQ).

Layout (reference.py's "nk" layout, converted once at load time from the packed one by ``to_nk_layout``):

* ``wt`` [N, K] int4 holding ``q - 8`` (signed, so the upcast is the CUTLASS-style exact int4 -> bf16);
* ``scales`` [K // G, N] float16 / bfloat16 and ``zeros`` [K // G, N] int8 (0..15): unchanged.

``w[k, n] = (wt[n, k] + 8 - zeros[k // G, n]) * scales[k // G, n]``, computed in bf16 registers as
``(wt - (zeros - 8)) * bf16(scales)``: the subtraction is exact (small integers), the product is rounded once; the
scale itself is rounded from float16 to bf16 (the reference rounds the float32 product once).

Needs G a multiple of the K tile (64 or 128) and N a multiple of 128; the token rows are padded to a multiple of
the token tile (16..256).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from ..device_info import num_sms as device_num_sms

W_ROWS_PER_WG = 64  # one wgmma's M
COMPUTE_WGS = 2
CTA_W_ROWS = W_ROWS_PER_WG * COMPUTE_WGS


@dataclasses.dataclass(frozen=True)
class MosaicTiles:
    """tm: token rows per tile (the wgmma's N, a multiple of 16, <= 256); tk: K per pipeline step (divides the
    group size, or a multiple of it: then one step dequantizes ``tk // G`` groups, one wgmma each); splits: K
    slices summed in float32 afterwards; stages: TMA copies in flight; interleave (several groups per step
    only): issue each group's wgmma as soon as it is dequantized, so the next group's dequantization overlaps it
    (else all groups are dequantized first); measured no faster than tk 256 without it, so not in the plan."""
    tm: int
    tk: int = 128
    splits: int = 1
    stages: int = 4
    interleave: bool = False

    @property
    def name(self) -> str:
        return f"tm{self.tm}_tk{self.tk}_s{self.splits}_st{self.stages}" + ("_il" if self.interleave else "")

    def smem_bytes(self, out_bytes: int = 2) -> int:
        """Shared memory of the kernel: per stage x's [tm, tk] bf16 tile, the [128, tk] int4 weight tile and the
        scale / zero rows; the two warpgroups' [64, tm] output tiles (float32 with split-K)."""
        out_bytes = 4 if self.splits > 1 else out_bytes
        stage = self.tm * self.tk * 2 + CTA_W_ROWS * self.tk // 2 + CTA_W_ROWS * 3 * max(1, self.tk // 64)
        return self.stages * stage + COMPUTE_WGS * W_ROWS_PER_WG * self.tm * out_bytes


SMEM_BUDGET = 220 * 1024  # of the H100/H200's 227 KB per block, with room for barriers


def mosaic_plan(m: int, k: int, n: int, group_size: int, num_sms: int) -> MosaicTiles | None:
    """The tiling for an [m, K] x [K, N] product, or None when the kernel does not apply to the shape."""
    tk = 128 if group_size % 128 == 0 else 64 if group_size % 64 == 0 else 0
    if not tk or k % tk or n % CTA_W_ROWS:
        return None
    tm = _round_up(m, 16) if m <= 128 else 128  # the rows are padded to a multiple of tm
    if tm <= 64 and tk == 128 and k % 256 == 0:
        # decode rows: two groups of 128 per K step (half the steps, each step's fixed cost): with the y epilogue
        # gate_up 42 / 49 us at 16 / 64 rows against 50-53 / 56 at tk 128, down 23 vs 28-29 at 16 rows (H200)
        tk = 256
    units = (n // CTA_W_ROWS) * (_round_up(m, tm) // tm)
    k_steps = k // tk
    splits = 1

    def splittable(s):  # whole K steps and whole groups (or one per-channel group) per split, >= 4 steps each
        return k_steps % s == 0 and k_steps // s >= 4 and (group_size == k or (k // s) % group_size == 0)

    while units * splits * 2 <= num_sms * 1.25 and splittable(splits * 2):  # split K until ~one unit per SM
        splits *= 2
    tiles = MosaicTiles(tm=tm, tk=tk, splits=splits)
    if m >= 256 and _round_up(m, 128) % 256 == 0 and splits == 1:
        tiles = MosaicTiles(tm=256, tk=tk)  # x's tile read once per 256 tokens: gate_up at 256 rows 1.10x bf16, 0.92x at 128
    while tiles.stages > 2 and tiles.smem_bytes() > SMEM_BUDGET:  # 128-token tiles: x's tile is 32 KB a stage
        tiles = dataclasses.replace(tiles, stages=tiles.stages - 1)
    return tiles


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def _swizzled(bytes_per_row: int, bits: int, role: str):
    import jax.experimental.pallas.mosaic_gpu as plgpu

    swizzle = plgpu.find_swizzle(bytes_per_row * 8, role)
    return (plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle))


def int4_matmul_mosaic(x: jax.Array, wt: jax.Array, scales: jax.Array, zeros: jax.Array, out_dtype=None, *,
                       tiles: MosaicTiles, num_sms: int | None = None) -> jax.Array:
    """x [M, K] bf16 @ W -> [M, N] in ``out_dtype`` (default x.dtype), W given as ``wt`` [N, K] int4 (q - 8) and
    ``scales`` / ``zeros`` [K // G, N] (module docstring). float32 accumulation. Hopper only: Pallas' GPU
    interpret mode (jax 0.10) cannot run a wgmma with a register operand, so the CPU tests only lower it."""
    return int4_matmul_mosaic_group(x, [(wt, scales, zeros)], out_dtype, tiles=tiles, num_sms=num_sms)[0]


def int4_matmul_mosaic_group(x: jax.Array, weights, out_dtype=None, *, tiles: MosaicTiles,
                             num_sms: int | None = None) -> list[jax.Array]:
    """[x @ W_i for each W_i] in one kernel launch: ``weights`` is a list of (wt [N_i, K], scales, zeros) sharing
    x's K and the group size (q / k / v projections). One persistent loop runs every weight's work units, so
    three small products pay one launch, one pipeline ramp and one split-K sum's worth of fixed cost instead of
    three, and their CTA tiles share the GPU (k / v alone: 8 tiles of 128 rows). -> [M, N_i] each."""
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    out_dtype = out_dtype or x.dtype
    m, k = x.shape
    if x.dtype != jnp.bfloat16:
        raise ValueError(f"the Mosaic GPU int4 kernel takes bfloat16 activations, got {x.dtype}")
    groups = weights[0][1].shape[0]
    for wt, scales, _ in weights:
        if wt.ndim != 2 or wt.shape[1] != k or wt.dtype != jnp.int4:
            raise ValueError(f"wt must be int4 [N, K={k}], got {wt.dtype} {wt.shape}")
        if scales.shape[0] != groups:
            raise ValueError(f"weights grouped in one call need one group size: {scales.shape[0]} vs {groups} "
                             f"groups along K={k}")
    ns = [wt.shape[0] for wt, _, _ in weights]
    group = k // groups
    tm, tk, splits, stages = tiles.tm, tiles.tk, tiles.splits, tiles.stages
    per_channel = groups == 1
    # scale / zero rows per K step: several groups per step when tk > G (one wgmma of G columns each)
    step_groups = 1 if per_channel or group >= tk else tk // group
    sub_k = tk // step_groups
    if (k % (tk * splits) or (group % tk and tk % group) or any(n % CTA_W_ROWS for n in ns) or tm % 16
            or tm > 256 or (not per_channel and (k // splits) % group)):
        raise ValueError(f"int4 Mosaic GPU tiling {tiles.name} does not fit M={m}, K={k}, N={ns}, group {group}")
    num_sms = num_sms or device_num_sms()
    rows = m
    m = _round_up(rows, tm)  # padded token rows: whole [tm, 64] output tiles, a wgmma N multiple of 16
    x = jnp.pad(x, ((0, m - rows), (0, 0))) if m != rows else x
    m_tiles = m // tm
    k_steps = k // (tk * splits)
    unit_starts = [0]
    for n in ns:  # weight i owns work units [unit_starts[i], unit_starts[i + 1])
        unit_starts.append(unit_starts[-1] + (n // CTA_W_ROWS) * m_tiles * splits)
    units = unit_starts[-1]
    part_dtype = jnp.float32 if splits > 1 else out_dtype
    part_bits = jnp.dtype(part_dtype).itemsize * 8
    n_weights = len(weights)

    # shared-memory tiles no wider than one group's columns, so a group's slice of a step is whole tiles
    x_transforms = _swizzled(min(tk, 64) * 2 if step_groups > 1 else tk * 2, 16, "rhs")
    w_transforms = _swizzled(sub_k // 2, 4, "lhs")
    out_transforms = _swizzled(W_ROWS_PER_WG * part_bits // 8, part_bits, "out")

    def int4_matmul_kernel(x_gmem, *refs, out_smem):  # the name profiles show: int4_matmul_kernel_mosaic_gpu
        w_gmems, s_gmems, z_gmems, out_gmems = (refs[i * n_weights:(i + 1) * n_weights] for i in range(4))

        def pipeline(body, context):
            return plgpu.emit_pipeline_warp_specialized(
                body, grid=(k_steps,), memory_registers=40, wg_axis="wg", num_compute_wgs=COMPUTE_WGS,
                max_concurrent_steps=stages, compute_context=context,
                in_specs=[
                    plgpu.BlockSpec((tm, tk), lambda kk: (0, kk), transforms=x_transforms),
                    plgpu.BlockSpec((CTA_W_ROWS, tk), lambda kk: (0, kk), transforms=w_transforms),
                    plgpu.BlockSpec((step_groups, CTA_W_ROWS), lambda kk: (kk * tk // group // step_groups, 0)),
                    plgpu.BlockSpec((step_groups, CTA_W_ROWS), lambda kk: (kk * tk // group // step_groups, 0)),
                ])

        def ignore(*_, **__):
            return None

        # every weight's pipeline has the same block shapes: one set of buffers serves them all
        @functools.partial(pl.run_scoped, allocations=pipeline(ignore, ignore).get_allocations(
            x_gmem, w_gmems[0], s_gmems[0], z_gmems[0]), collective_axes="wg")
        def _pipeline_scope(allocations):
            wg = lax.axis_index("wg")
            rows = pl.ds(wg * W_ROWS_PER_WG, W_ROWS_PER_WG)

            def run_unit(i, unit):
                split = unit % splits
                mi = (unit // splits) % m_tiles
                ni = unit // (splits * m_tiles)
                w_slice = pl.ds(ni * CTA_W_ROWS, CTA_W_ROWS)
                t_slice = pl.ds(mi * tm, tm)
                k_slice = pl.ds(split * k_steps * tk, k_steps * tk)
                # each split covers whole groups (or the one group of a per-channel weight)
                g_slice = pl.ds(0, 1) if per_channel else pl.ds(split * (k_steps * tk // group), k_steps * tk // group)

                def context(run_pipeline):
                    @functools.partial(pl.run_scoped, acc=plgpu.ACC((W_ROWS_PER_WG, tm), jnp.float32))
                    def _acc_scope(acc):
                        run_pipeline(acc)
                        # y, not y^T: the [64, tm] accumulator is relaid out in registers (shuffles) and stored
                        # through a transposed view of this warpgroup's [tm, 64] tile, which TMA copies to
                        # y[tokens, this warpgroup's 64 columns], so XLA transposes no output
                        result = plgpu.layout_cast(acc[...].astype(part_dtype), plgpu.Layout.WGMMA_TRANSPOSED)
                        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                        out_smem.at[wg].T[...] = result
                        plgpu.commit_smem()
                        dst = out_gmems[i].at[split] if splits > 1 else out_gmems[i]
                        plgpu.copy_smem_to_gmem(out_smem.at[wg], dst.at[t_slice, w_slice].at[:, rows])

                def body(_, x_smem, w_smem, s_smem, z_smem, acc):
                    shape = (W_ROWS_PER_WG, sub_k)

                    def dequantized(g):
                        cols = pl.ds(g * sub_k, sub_k)
                        q = (w_smem[rows] if step_groups == 1 else w_smem[rows, cols]).astype(jnp.bfloat16)
                        zero = z_smem[g, rows].astype(jnp.bfloat16) - 8
                        scale = s_smem[g, rows].astype(jnp.bfloat16)
                        return (q - lax.broadcast_in_dim(zero, shape, [0])) * lax.broadcast_in_dim(scale, shape, [0])

                    def issue(g, w):
                        x_g = x_smem if step_groups == 1 else x_smem.at[:, pl.ds(g * sub_k, sub_k)]
                        plgpu.wgmma(acc, w, x_g.T)

                    if tiles.interleave:
                        for g in range(step_groups):
                            issue(g, dequantized(g))
                    else:  # all groups dequantized before the wgmmas read them
                        for g, w in enumerate([dequantized(g) for g in range(step_groups)]):
                            issue(g, w)
                    plgpu.wgmma_wait(0)
                    return acc

                pipeline(body, context)(
                    x_gmem.at[t_slice, k_slice], w_gmems[i].at[w_slice, k_slice],
                    s_gmems[i].at[g_slice, w_slice], z_gmems[i].at[g_slice, w_slice], allocations=allocations)

            @plgpu.nd_loop((units,), collective_axes="sm")
            def _unit_loop(info):
                (unit,) = info.index
                if n_weights == 1:
                    run_unit(0, unit)
                    return
                for i in range(n_weights):  # the unit index is uniform over the CTA: one branch runs
                    @pl.when((unit >= unit_starts[i]) & (unit < unit_starts[i + 1]))
                    def _weight_i(i=i):
                        run_unit(i, unit - unit_starts[i])

        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

    out_types = [jax.ShapeDtypeStruct((splits, m, n) if splits > 1 else (m, n), part_dtype) for n in ns]
    call = plgpu.kernel(
        int4_matmul_kernel, out_type=out_types, grid=(min(num_sms, units),),
        grid_names=("sm",), num_threads=COMPUTE_WGS + 1, thread_name="wg",
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
        scratch_types={"out_smem": plgpu.SMEM((COMPUTE_WGS, tm, W_ROWS_PER_WG), part_dtype,
                                              transforms=out_transforms)})
    outs = call(x, *(w[0] for w in weights), *(w[1] for w in weights), *(w[2] for w in weights))
    results = []
    for out in outs:
        if splits > 1:
            out = out.sum(axis=0)
        results.append(out[:rows].astype(out_dtype))
    return results
