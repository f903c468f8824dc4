"""The int4 matmul op (jaxllm.ops.quant_matmul) on CPU: unpacking against the numpy packers, the reference
against a numpy dequantization, and the Pallas/Triton kernel in interpret mode against the reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from int4_formats import dequantize, pack_rows
from jaxllm.ops.quant_matmul import (
    Int4Tiles,
    choose_impl,
    dequantize_int4,
    int4_matmul,
    int4_matmul_mosaic,
    int4_matmul_nk,
    int4_matmul_pallas,
    int4_matmul_reference,
    int4_matmul_reference_nk,
    mosaic_plan,
    plan,
    to_nk_layout,
    unpack_int4,
)
from jaxllm.ops.quant_matmul.mosaic_gpu import SMEM_BUDGET


def operands(m, k, n, group, seed=0, dtype=np.float32):
    rng = np.random.RandomState(seed)
    q = rng.randint(0, 16, (k, n))
    zeros = rng.randint(0, 16, (k // group, n))
    scales = (rng.rand(k // group, n) * 0.01 + 1e-3).astype(np.float16)
    x = rng.randn(m, k).astype(dtype)
    return x, q, zeros, scales


def test_unpack_and_dequantize_are_exact():
    _, q, zeros, scales = operands(1, 64, 24, 16)
    packed = jnp.asarray(pack_rows(q))
    np.testing.assert_array_equal(np.asarray(unpack_int4(packed)), q)
    w = dequantize_int4(packed, jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))
    np.testing.assert_array_equal(np.asarray(w), dequantize(q, zeros, scales))


@pytest.mark.parametrize("m,k,n,group", [(1, 256, 64, 32), (5, 256, 128, 64), (20, 512, 192, 128),
                                         (40, 256, 128, 256)])
def test_reference_and_interpret_kernel_match_numpy(m, k, n, group):
    x, q, zeros, scales = operands(m, k, n, group, seed=m)
    args = (jnp.asarray(x), jnp.asarray(pack_rows(q)), jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))
    want = x.astype(np.float64) @ dequantize(q, zeros, scales).astype(np.float64)
    ref = np.asarray(int4_matmul_reference(*args))
    np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
    tiles = plan(m, k, n, group)
    assert tiles is not None and k % (tiles.block_k * tiles.num_splits) == 0
    np.testing.assert_allclose(np.asarray(int4_matmul_pallas(*args, interpret=True)), ref, rtol=1e-5, atol=1e-5)


def test_interpret_kernel_bfloat16_and_explicit_tiles():
    x, q, zeros, scales = operands(17, 256, 128, 64, seed=3)
    args = (jnp.asarray(x, jnp.bfloat16), jnp.asarray(pack_rows(q)), jnp.asarray(scales),
            jnp.asarray(zeros, jnp.int8))
    ref = int4_matmul_reference(*args)
    for tiles in (Int4Tiles(16, 64, 32, 1), Int4Tiles(32, 128, 64, 2)):
        out = int4_matmul_pallas(*args, tiles=tiles, interpret=True)
        assert out.dtype == jnp.bfloat16 and out.shape == (17, 128)
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), rtol=2e-2, atol=2e-2)


def test_dispatch():
    x, q, zeros, scales = operands(6, 128, 64, 32)
    args = (jnp.asarray(x).reshape(2, 3, 128), jnp.asarray(pack_rows(q)), jnp.asarray(scales),
            jnp.asarray(zeros, jnp.int8))
    if jax.devices()[0].platform == "cpu":
        assert choose_impl(1) == "reference"
    out = int4_matmul(*args)
    assert out.shape == (2, 3, 64)
    np.testing.assert_allclose(np.asarray(out).reshape(6, 64), x @ dequantize(q, zeros, scales), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="impl 'nope' is not available"):
        int4_matmul(*args, impl="nope")
    with pytest.raises(ValueError, match="x has 100 input features"):
        int4_matmul(jnp.ones((2, 100)), *args[1:], impl="reference")
    assert plan(4, 128, 100, 32) is None  # no N tile divides 100


@pytest.mark.parametrize("group,tiles", [(128, Int4Tiles(16, 64, 128, 2, split_dot=True)),
                                         (32, Int4Tiles(16, 32, 128, 1, split_dot=True)),
                                         (256, Int4Tiles(32, 64, 128, 1, split_dot=True)),
                                         (128, Int4Tiles(16, 64, 128, 2, split_dot=True, joined=True)),
                                         (32, Int4Tiles(32, 32, 256, 1, split_dot=True, joined=True))])
def test_interpret_split_dot_variant(group, tiles):
    x, q, zeros, scales = operands(9, 512, 128, group, seed=group)
    args = (jnp.asarray(x), jnp.asarray(pack_rows(q)), jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))
    assert tiles.fits(512, 128, group)
    np.testing.assert_allclose(np.asarray(int4_matmul_pallas(*args, tiles=tiles, interpret=True)),
                               x @ dequantize(q, zeros, scales), rtol=1e-5, atol=1e-5)
    assert not Int4Tiles(16, 64, 64, split_dot=True).fits(512, 128, group)  # BK / 8 < 16


def test_plan_variant():
    small, wide = plan(1, 4096, 4096, 128), plan(64, 4096, 4096, 128)
    assert small.split_dot and not small.joined and wide.split_dot and wide.joined  # the measured defaults
    assert not plan(1, 4096, 4096, 128, variant="gather").split_dot
    assert plan(1, 4096, 4096, 128, variant="joined").joined
    split = plan(1, 4096, 4096, 128, variant="split")
    assert split.split_dot and not split.joined and split.block_k == 128
    assert not plan(1, 64, 64, 32, variant="split").split_dot  # K=64 < 128: the gather tiles
    with pytest.raises(ValueError, match="variant 'fast'"):
        plan(1, 4096, 4096, 128, variant="fast")


def test_magic_number_dequantization_is_exact():
    """(128 + q) * s - (128 + z) * s, the kernel's dequantization, equals (q - z) * s exactly for every nibble,
    zero and float16 scale magnitude (subnormal to max), whichever nibble of the int32 holds q."""
    from jaxllm.ops.quant_matmul.pallas_triton import _nibbles_as_f32, _scale_and_offset
    q, z = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    q, z = q.reshape(-1, 1), z.reshape(-1, 1)  # [256, 1]: every (q, z) pair
    rng = np.random.RandomState(0)
    s = np.concatenate([np.array([6e-8, 1e-5, 1e-3, 0.0173, 1.0, 3.14, 65504.0]),
                        rng.rand(57) * 10.0 ** rng.randint(-6, 4, 57)]).astype(np.float16)[None, :]  # [1, 64]
    want = (q - z).astype(np.float32) * s.astype(np.float32)
    scale, offset = _scale_and_offset(jnp.asarray(s), jnp.asarray(np.broadcast_to(z, (256, 64)), jnp.int8))
    for nib in range(8):
        packed = jnp.asarray(np.broadcast_to((q << (4 * nib)) | (0x5 << (4 * ((nib + 1) % 8))), (256, 64))
                             .astype(np.uint32).view(np.int32))  # another nibble set too: it must be masked off
        got = np.asarray(_nibbles_as_f32(packed, nib) * scale + offset)
        np.testing.assert_array_equal(got, want)
        got_rows = np.asarray(_nibbles_as_f32(packed, jnp.full((256, 1), nib, jnp.int32)) * scale + offset)
        np.testing.assert_array_equal(got_rows, want)  # the gather variant's per-row nibble form


def test_choose_layout_and_impl_by_device(monkeypatch):
    """Hopper, bfloat16: the nk layout, the Mosaic GPU kernel up to MOSAIC_MAX_ROWS rows and XLA's dequantize +
    GEMM above. Hopper, float16 (AWQ checkpoints' usual dtype): the packed layout and the Triton kernel up to
    TRITON_MAX_ROWS. Elsewhere the packed layout and the reference (the Triton kernel only when forced)."""
    from jaxllm.ops.quant_matmul import dispatch
    top, triton_top = dispatch.MOSAIC_MAX_ROWS, dispatch.TRITON_MAX_ROWS
    for cc, dtype, layout, rows, want in (
            ((9, 0), jnp.bfloat16, "nk", 64, "mosaic_gpu"), ((9, 0), jnp.bfloat16, "nk", top, "mosaic_gpu"),
            ((9, 0), jnp.bfloat16, "nk", top + 1, "reference"),
            ((9, 0), jnp.float16, "packed", triton_top, "pallas_triton"),
            ((9, 0), jnp.float16, "packed", triton_top + 1, "reference"),
            ((9, 0), jnp.float32, "packed", 1, "pallas_triton"),
            ((8, 0), jnp.bfloat16, "packed", 1, "reference"), ((8, 9), jnp.float16, "packed", 16, "reference"),
            ((7, 5), jnp.bfloat16, "packed", 16, "reference"), (None, jnp.bfloat16, "packed", 16, "reference")):
        monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda cc=cc: cc)
        assert dispatch.weight_layout(dtype) == layout, (cc, dtype)
        assert dispatch.choose_impl(rows, layout) == want, (cc, rows)
    assert dispatch.weight_layout(jnp.bfloat16, "reference") == "packed"
    assert dispatch.weight_layout(jnp.bfloat16, "pallas_triton") == "packed"
    with pytest.raises(ValueError, match="'mosaic_gpu' needs a Hopper GPU"):
        dispatch.weight_layout(jnp.bfloat16, "mosaic_gpu")  # (cc is None here)
    with pytest.raises(ValueError, match="impl 'cuda_magic' is not available"):
        dispatch.weight_layout(jnp.bfloat16, "cuda_magic")
    monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda: (9, 0))
    assert dispatch.weight_layout(jnp.bfloat16, "mosaic_gpu") == "nk"
    with pytest.raises(ValueError, match="'mosaic_gpu' takes bfloat16 activations; this model computes in float16"):
        dispatch.weight_layout(jnp.float16, "mosaic_gpu")


def test_packed_default_falls_back_where_no_tile_fits(monkeypatch):
    """On Hopper the packed layout's default sends decode rows to the Triton kernel; a shape no tile divides
    (N = 100) must still run (through the reference), while forcing the kernel on it is an error naming it."""
    from jaxllm.ops.quant_matmul import dispatch
    monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda: (9, 0))
    x, q, zeros, scales = operands(4, 128, 100, 32)
    args = (jnp.asarray(x), jnp.asarray(pack_rows(q)), jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))
    assert dispatch.choose_impl(4) == "pallas_triton" and plan(4, 128, 100, 32) is None
    np.testing.assert_allclose(np.asarray(int4_matmul(*args)), x @ dequantize(q, zeros, scales), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no tiling for M=4, K=128, N=100"):
        int4_matmul(*args, impl="pallas_triton")


def nk_args(m, k, n, group, seed=0):
    x, q, zeros, scales = operands(m, k, n, group, seed=seed)
    packed = (jnp.asarray(x), jnp.asarray(pack_rows(q)), jnp.asarray(scales), jnp.asarray(zeros, jnp.int8))
    return x @ dequantize(q, zeros, scales), packed, (packed[0], to_nk_layout(packed[1]), *packed[2:])


@pytest.mark.parametrize("k,n,group", [(128, 64, 32), (256, 96, 256), (512, 128, 128)])
def test_nk_layout_reference(k, n, group):
    """to_nk_layout + the nk reference == the numpy dequantization; the int4 values are q - 8 in [-8, 7]."""
    want, packed, nk = nk_args(5, k, n, group, seed=k)
    assert nk[1].dtype == jnp.int4 and nk[1].shape == (n, k)
    np.testing.assert_array_equal(np.asarray(nk[1], np.int32) + 8, np.asarray(unpack_int4(packed[1])).T)
    np.testing.assert_allclose(np.asarray(int4_matmul_reference_nk(*nk)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(int4_matmul_nk(nk[0].reshape(1, 5, k), *nk[1:])).reshape(5, n), want,
                               rtol=1e-5, atol=1e-5)
    multi = to_nk_layout(packed[1].reshape(k // 8, 2, n // 2))  # a model's [K // 8, 2, F] weight
    np.testing.assert_array_equal(np.asarray(multi).reshape(n, k), np.asarray(nk[1]))


def test_nk_dispatch_errors_and_fallback(monkeypatch):
    """On Hopper the nk default sends rows to the Mosaic kernel; a shape its tiles do not fit (N = 100) runs
    through the reference, forcing the kernel on it is an error naming the shape; packed-only kernels are
    refused for the nk layout."""
    from jaxllm.ops.quant_matmul import dispatch
    want, _, nk = nk_args(4, 128, 100, 32)
    monkeypatch.setattr(dispatch, "gpu_compute_capability", lambda: (9, 0))
    assert dispatch.choose_impl(4, "nk") == "mosaic_gpu" and mosaic_plan(4, 128, 100, 32, 132) is None
    np.testing.assert_allclose(np.asarray(int4_matmul_nk(*nk)), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no tiling for M=4, K=128, N=100"):
        int4_matmul_nk(*nk, impl="mosaic_gpu")
    with pytest.raises(ValueError, match="'pallas_triton' is not available for the 'nk' weight layout"):
        int4_matmul_nk(*nk, impl="pallas_triton")
    with pytest.raises(ValueError, match="wt must be int4"):
        int4_matmul_nk(nk[0], nk[1].astype(jnp.int8), *nk[2:])
    _, _, fits = nk_args(4, 128, 128, 64)
    assert mosaic_plan(4, 128, 128, 64, 132) is not None
    with pytest.raises(ValueError, match="'mosaic_gpu' takes bfloat16 activations, got float32"):
        int4_matmul_nk(*fits, impl="mosaic_gpu")  # a float32 x, forced: an error, not the reference


def test_mosaic_plan():
    """Tiles per measured shape: the token tile is M up to 128, split-K fills the GPU for few weight rows."""
    gate_up, down = mosaic_plan(64, 4096, 28672, 128, 132), mosaic_plan(64, 14336, 4096, 128, 132)
    assert (gate_up.tm, gate_up.splits) == (64, 1) and (down.tm, down.splits) == (64, 4)
    assert mosaic_plan(256, 4096, 28672, 128, 132).tm == 256  # measured 1.10x bf16 against 0.92x at 128
    # decode rows step over two groups of 128 (measured 12-18% faster with the y epilogue), wider tiles over one
    assert (gate_up.tk, down.tk, mosaic_plan(128, 4096, 28672, 128, 132).tk) == (256, 256, 128)
    assert mosaic_plan(16, 4096, 4096, 64, 132).tk == 64  # groups of 64: one group a step
    assert mosaic_plan(12, 4096, 4096, 128, 132).tm == 16  # rows padded to a multiple of 16 (the wgmma's N)
    assert mosaic_plan(8, 4096, 4096, 32, 132) is None  # group 32 < the 64-wide K tile
    for m in (1, 8, 64, 200, 256, 2048):
        for k, n in ((4096, 28672), (14336, 4096), (4096, 1024)):
            t = mosaic_plan(m, k, n, 128, 132)
            assert t.smem_bytes() <= SMEM_BUDGET and t.tm % 16 == 0 and k % (t.tk * t.splits) == 0


@pytest.mark.parametrize("m,k,n,group", [(16, 4096, 28672, 128), (64, 14336, 4096, 128), (256, 4096, 28672, 128),
                                         (8, 2048, 512, 2048), (5, 1024, 32768, 128)])
def test_mosaic_kernel_lowers_for_hopper(m, k, n, group):
    """The Mosaic GPU kernel needs a Hopper GPU to compile, but its Pallas lowering (layout inference included)
    runs here: a jax API change that breaks it shows up on CPU."""
    assert_lowers_for_hopper(m, k, n, group, mosaic_plan(m, k, n, group, 132))


def assert_lowers_for_hopper(m, k, n, group, tiles):
    """int4_matmul_mosaic on [m, K] x [K, N] int4 (group ``group``) at ``tiles`` lowers for sm_90."""
    args = (jax.ShapeDtypeStruct((m, k), jnp.bfloat16), jax.ShapeDtypeStruct((n, k), jnp.int4),
            jax.ShapeDtypeStruct((k // group, n), jnp.float16), jax.ShapeDtypeStruct((k // group, n), jnp.int8))
    lowered = jax.jit(lambda *a: int4_matmul_mosaic(*a, tiles=tiles, num_sms=132)).trace(*args).lower(
        lowering_platforms=("cuda",))
    assert "mosaic_gpu" in lowered.as_text()


@pytest.mark.parametrize("tk,group,interleave", [(256, 128, False), (128, 64, False), (256, 64, False),
                                                 (256, 4096, False), (256, 128, True)])
def test_mosaic_kernel_lowers_with_several_groups_per_step(tk, group, interleave):
    """K steps wider than a group (one scale row and one wgmma per group in a step, issued after all groups are
    dequantized or each as soon as its group is) lower for sm_90."""
    from jaxllm.ops.quant_matmul.mosaic_gpu import MosaicTiles
    assert_lowers_for_hopper(64, 4096, 1024, group, MosaicTiles(tm=64, tk=tk, splits=2, stages=3,
                                                                interleave=interleave))


def test_grouped_mosaic_kernel_lowers_for_hopper():
    """q / k / v in one launch (int4_matmul_mosaic_group): lowered for sm_90 like the single kernel."""
    from jaxllm.ops.quant_matmul import int4_matmul_mosaic_group
    k = 4096
    t = mosaic_plan(64, k, 6144, 128, 132)
    weights = [(jax.ShapeDtypeStruct((n, k), jnp.int4), jax.ShapeDtypeStruct((k // 128, n), jnp.float16),
                jax.ShapeDtypeStruct((k // 128, n), jnp.int8)) for n in (4096, 1024, 1024)]
    lowered = jax.jit(lambda x, w: int4_matmul_mosaic_group(x, w, tiles=t, num_sms=132)).trace(
        jax.ShapeDtypeStruct((64, k), jnp.bfloat16), weights).lower(lowering_platforms=("cuda",))
    assert "mosaic_gpu" in lowered.as_text()


def test_nk_group_falls_back_per_weight():
    """Off Hopper (or on shapes the kernel does not fit) a group runs one nk product per weight: same results."""
    from jaxllm.ops.quant_matmul import int4_matmul_nk_group
    want_a, _, a = nk_args(6, 256, 128, 64, seed=1)
    _, packed_b, _ = nk_args(6, 256, 96, 64, seed=2)
    b = (a[0], to_nk_layout(packed_b[1]), *packed_b[2:])
    want_b = np.asarray(int4_matmul_reference_nk(*b))
    out_a, out_b = int4_matmul_nk_group(a[0].reshape(2, 3, 256), [a[1:], b[1:]])
    assert out_a.shape == (2, 3, 128) and out_b.shape == (2, 3, 96)
    np.testing.assert_allclose(np.asarray(out_a).reshape(6, 128), want_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out_b).reshape(6, 96), want_b, rtol=1e-5, atol=1e-5)
