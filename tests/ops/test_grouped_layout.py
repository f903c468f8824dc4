"""The tile-aligned slot order a MoE layer shares between its grouped matmuls (ops/grouped_matmul/layout.py), and
the grouped matmul on it (``grouped_matmul_slotted``) for every implementation, with and without the experts'
per-channel scales, against a numpy loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxllm.ops.grouped_matmul import IMPLEMENTATIONS, grouped_layout, grouped_matmul_slotted, layout_plan

SIZES = [(5, 0, 11, 1, 0, 13), (0, 0, 0, 0, 0, 0), (37, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 30), (1, 1, 1, 1, 1, 1)]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("block_m", [1, 4, 16])
def test_layout_places_every_row_once_in_its_groups_tiles(sizes, block_m):
    m = 37
    layout = grouped_layout(jnp.asarray(sizes, jnp.int32), m, block_m)
    tile_group = np.asarray(layout.tile_group)
    assert layout.num_slots == len(tile_group) * block_m >= sum(-(-s // block_m) * block_m for s in sizes)
    groups = np.repeat(np.arange(len(sizes)), sizes)  # the contiguous order's group of each row
    rows = np.arange(len(groups), dtype=np.int32)
    slots = np.asarray(layout.slots(jnp.asarray(rows), jnp.asarray(groups, jnp.int32)))
    assert len(set(slots.tolist())) == len(rows)  # one slot per row
    np.testing.assert_array_equal(tile_group[slots // block_m], groups)  # inside its group's tiles
    np.testing.assert_array_equal(np.asarray(layout.source_rows())[slots], rows)  # and the slot holds it
    used = np.sum(-(-np.asarray(sizes) // block_m))
    assert (tile_group[:used] >= 0).all() and (tile_group[used:] == -1).all()
    np.testing.assert_array_equal(np.asarray(layout.slot_group()), np.repeat(tile_group, block_m))
    assert int(layout.slots(jnp.asarray([3]), jnp.asarray([len(sizes)]))[0]) == 0  # no group: slot 0


def _numpy_slotted(lhs, rhs, layout, scale, swiglu):
    out = np.zeros((lhs.shape[0], rhs.shape[2]), np.float32)
    for s, g in enumerate(np.asarray(layout.slot_group())):
        if g >= 0:
            out[s] = lhs[s] @ rhs[g] * (1.0 if scale is None else scale[g])
    if swiglu:
        gate, up = np.split(out, 2, axis=1)
        return gate / (1.0 + np.exp(-gate)) * up
    return out


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("scaled, swiglu", [(False, False), (True, False), (False, True), (True, True)])
def test_slotted_matmul_matches_numpy(impl, scaled, swiglu):
    """Plain or SwiGLU (gate columns, then up), bf16-free float32 or fp8 weights with per-channel scales.
    Poisoned padding: NaN in every slot no row owns stays in those slots."""
    sizes = jnp.asarray((3, 0, 17, 2, 0, 5), jnp.int32)
    impl, block_m = layout_plan(37, 6, [(32, 32)], impl)
    layout = grouped_layout(sizes, 37, block_m if impl == "pallas_triton" else 4)
    kx, kw, ks = jax.random.split(jax.random.key(0), 3)
    lhs = jax.random.normal(kx, (layout.num_slots, 32), jnp.float32)
    real = np.zeros(layout.num_slots, bool)
    real[np.asarray(layout.slots(jnp.arange(27), jnp.repeat(jnp.arange(6), sizes, total_repeat_length=27)))] = True
    lhs = jnp.where(jnp.asarray(real)[:, None], lhs, jnp.nan)
    rhs = jax.random.normal(kw, (6, 32, 64), jnp.float32)
    scale = jax.random.uniform(ks, (6, 64), jnp.float32, 0.5, 2.0) if scaled else None
    if scaled:
        rhs = rhs.astype(jnp.float8_e4m3fn)  # fp8 experts: converted per tile, scaled per output channel
    out = np.asarray(grouped_matmul_slotted(lhs, rhs, layout, impl=impl, scale=scale, swiglu=swiglu))
    want = _numpy_slotted(np.asarray(lhs), np.asarray(rhs.astype(jnp.float32)), layout,
                          None if scale is None else np.asarray(scale), swiglu)
    assert out.shape == (layout.num_slots, 32 if swiglu else 64)
    np.testing.assert_allclose(out[real], want[real], rtol=1e-5, atol=1e-4)


def test_layout_plan_choices():
    assert layout_plan(64, 8, [(32, 48), (48, 32)], "ragged_dot") == ("ragged_dot", 1)
    assert layout_plan(2048, 128, [(2048, 1536), (768, 2048)], "pallas_triton") == ("pallas_triton", 16)
    assert layout_plan(65536, 128, [(2048, 1536), (768, 2048)], "pallas_triton") == ("pallas_triton", 64)
    with pytest.raises(ValueError, match=r"no grouped-matmul tiling for \(K, N\)"):
        layout_plan(64, 8, [(32, 40)], "pallas_triton")
    with pytest.raises(ValueError, match="impl='cutlass' is not supported"):
        layout_plan(64, 8, [(32, 48)], "cutlass")
    layout = grouped_layout(jnp.asarray([3, 4], jnp.int32), 7, 1)
    with pytest.raises(ValueError, match=r"lhs \(5, 32\) is not \[7, 32\]"):
        grouped_matmul_slotted(jnp.zeros((5, 32)), jnp.zeros((2, 32, 48)), layout, impl="pallas_triton")


@pytest.mark.parametrize("swiglu", [False, True])
def test_slotted_kernel_lowers_for_cuda(swiglu):
    """The Pallas -> Triton lowering of the slotted kernel with fp8 experts and their scales, as the MoE layer
    runs it at Qwen3-30B-A3B's shapes (256 decode tokens)."""
    from jaxllm.ops.grouped_matmul.pallas_triton import grouped_matmul_tiles

    def gate_up(rows, rhs, sizes, scale):
        layout = grouped_layout(sizes, rows.shape[0], 16)
        slotted = jnp.take(rows, layout.source_rows(), axis=0)
        return grouped_matmul_tiles(slotted, rhs, layout, jnp.bfloat16, scale=scale, swiglu=swiglu)

    s = jax.ShapeDtypeStruct
    args = (s((2048, 2048), jnp.bfloat16), s((128, 2048, 1536), jnp.float8_e4m3fn), s((128,), jnp.int32),
            s((128, 1536), jnp.float32))
    text = jax.jit(gate_up).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert ("grouped_matmul_swiglu_bm16" in text) == swiglu and "triton" in text and "stablehlo.while" not in text


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [3, 256, 2048])
@pytest.mark.parametrize("fp8", [False, True])
def test_moe_layer_kernels_on_gpu_match_reference(tokens, fp8):
    """One MoE layer at Qwen3-30B-A3B's shapes (128 experts, D 2048, F 768, top-8) in bfloat16 through the
    slotted Triton kernels (SwiGLU epilogue, in-kernel fp8 scales) against the per-group loop."""
    from jaxllm.models.moe import expert_ffn, route

    kx, kr, kg, kd = jax.random.split(jax.random.key(tokens), 4)
    x = jax.random.normal(kx, (tokens, 2048), jnp.bfloat16)
    router = jax.random.normal(kr, (2048, 128), jnp.bfloat16)
    gate_up = 0.02 * jax.random.normal(kg, (128, 2048, 2, 768), jnp.float32)
    down = 0.02 * jax.random.normal(kd, (128, 768, 2048), jnp.float32)
    if fp8:  # per-channel scales as the loader makes them
        gu = ((gate_up / 0.01).astype(jnp.float8_e4m3fn), jnp.full((128, 2, 768), 0.01, jnp.float32))
        operands = gu, ((down / 0.01).astype(jnp.float8_e4m3fn), jnp.full((128, 2048), 0.01, jnp.float32))
    else:
        operands = (gate_up.astype(jnp.bfloat16), None), (down.astype(jnp.bfloat16), None)
    weights, experts = route(x, router, 8, True)

    def run(impl):
        return jax.jit(lambda *a: expert_ffn(*a, 0, impl))(x, weights, experts, *operands)

    out, ref = run("pallas_triton"), run("reference")
    assert float(jnp.abs(out - ref).max()) <= 0.02 * float(jnp.abs(ref).max())
