"""Grouped matmul: jax.lax.ragged_dot (the default path) against the per-group loop and the dense every-group
oracle, with empty groups and rows past the groups' total."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxllm.ops.grouped_matmul import (
    IMPLEMENTATIONS,
    count_at_or_below,
    grouped_matmul_dense,
    grouped_matmul_reference,
    row_groups,
)

from jaxllm import ops


def operands(m=37, k=32, n=48, sizes=(5, 0, 11, 1, 0, 13), dtype=jnp.float32, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    lhs = jax.random.normal(kx, (m, k), jnp.float32).astype(dtype)
    rhs = jax.random.normal(kw, (len(sizes), k, n), jnp.float32).astype(dtype)
    return lhs, rhs, jnp.asarray(sizes, jnp.int32)


def test_row_groups():
    assert row_groups(jnp.asarray([2, 0, 1]), 5).tolist() == [0, 0, 2, 3, 3]


@pytest.mark.parametrize("sizes, n", [((2, 0, 1), 5), ((0, 0, 0), 4), ((7,), 3), ((1, 1, 0, 0, 3), 9), ((), 2)])
def test_count_at_or_below_is_searchsorted(sizes, n):
    ends = jnp.cumsum(jnp.asarray(sizes, jnp.int32))
    want = np.searchsorted(np.asarray(ends), np.arange(n), side="right")
    assert count_at_or_below(ends, n).tolist() == want.tolist()


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_matches_oracles_fp32(impl):
    lhs, rhs, sizes = operands()
    out = np.asarray(ops.grouped_matmul(lhs, rhs, sizes, impl=impl))
    dense = np.asarray(grouped_matmul_dense(lhs, rhs, sizes))
    # an explicit loop in numpy, independent of both jnp oracles
    ref, start = np.zeros_like(dense), 0
    for g, s in enumerate(np.asarray(sizes)):
        ref[start:start + s] = np.asarray(lhs)[start:start + s] @ np.asarray(rhs)[g]
        start += s
    np.testing.assert_allclose(dense, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert not out[int(sizes.sum()):].any()  # rows past the groups are zeros


def test_bf16_matches_reference():
    lhs, rhs, sizes = operands(dtype=jnp.bfloat16, sizes=(9, 9, 9, 10))
    out = ops.grouped_matmul(lhs, rhs, sizes).astype(jnp.float32)
    ref = grouped_matmul_reference(lhs, rhs, sizes).astype(jnp.float32)
    assert out.dtype == jnp.float32 and float(jnp.abs(out - ref).max()) <= 0.05 * float(jnp.abs(ref).max())


@pytest.mark.parametrize("impl", ["ragged_dot", "pallas_triton"])
def test_jit_with_traced_group_sizes(impl):
    lhs, rhs, _ = operands(sizes=(0,) * 6)
    f = jax.jit(lambda s: ops.grouped_matmul(lhs, rhs, s, impl=impl))
    for sizes in ((37, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 37), (6, 6, 6, 6, 6, 7)):
        s = jnp.asarray(sizes, jnp.int32)
        np.testing.assert_allclose(f(s), grouped_matmul_dense(lhs, rhs, s), rtol=1e-5, atol=1e-5)


def test_bad_operands_are_clear():
    lhs, rhs, sizes = operands()
    with pytest.raises(ValueError, match="lhs K=32 != rhs K=23"):
        ops.grouped_matmul(lhs, rhs[:, :23], sizes)
    with pytest.raises(ValueError, match="no grouped-matmul tiling for K=32, N=40"):
        ops.grouped_matmul(lhs, rhs[:, :, :40], sizes, impl="pallas_triton")
    with pytest.raises(ValueError, match="group_sizes must be an integer array of shape"):
        ops.grouped_matmul(lhs, rhs, sizes[:3])
    with pytest.raises(ValueError, match="impl='cutlass' is not supported"):
        ops.grouped_matmul(lhs, rhs, sizes, impl="cutlass")


@pytest.mark.parametrize("impl", ["ragged_dot", "pallas_triton", "reference"])
def test_narrow_weights_are_converted(impl):
    """fp8 experts: rhs in float8_e4m3fn, lhs in float32 (the kernel converts each weight tile)."""
    lhs, rhs, sizes = operands()
    rhs8 = rhs.astype(jnp.float8_e4m3fn)
    out = ops.grouped_matmul(lhs, rhs8, sizes, impl=impl, preferred_element_type=jnp.float32)
    ref = grouped_matmul_dense(lhs, rhs8.astype(jnp.float32), sizes)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("rows_per_expert", [1, 16, 300])
def test_pallas_kernel_on_gpu_matches_reference(rows_per_expert):
    """Qwen3-30B-A3B's expert shapes (128 experts, D 2048, F 768) in bfloat16, decode to prefill row counts."""
    rng = np.random.RandomState(0)
    sizes = rng.multinomial(128 * rows_per_expert, np.ones(128) / 128).astype(np.int32)
    sizes[:3] = 0  # some experts get no rows
    m = int(sizes.sum()) + 5  # and some rows belong to no expert
    lhs = jax.random.normal(jax.random.key(1), (m, 2048), jnp.bfloat16)
    for k, n in ((2048, 1536), (768, 2048)):
        lhs_k = lhs[:, :k]
        rhs = (0.02 * jax.random.normal(jax.random.key(k), (128, k, n), jnp.float32)).astype(jnp.bfloat16)
        out = ops.grouped_matmul(lhs_k, rhs, jnp.asarray(sizes), impl="pallas_triton").astype(jnp.float32)
        ref = grouped_matmul_reference(lhs_k, rhs, jnp.asarray(sizes), jnp.float32)
        assert float(jnp.abs(out - ref).max()) <= 0.02 * float(jnp.abs(ref).max())


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
def test_poisoned_rows_past_the_groups_stay_out(impl):
    """NaN in the rows no group owns (the MoE layer's static padding): the groups' rows are exact, the rest 0."""
    lhs, rhs, sizes = operands(sizes=(3, 0, 17, 2, 0, 5))  # 27 of 37 rows
    lhs = lhs.at[27:].set(jnp.nan)
    out = np.asarray(ops.grouped_matmul(lhs, rhs, sizes, impl=impl))
    ref = np.asarray(grouped_matmul_dense(lhs.at[27:].set(0.0), rhs, sizes))
    np.testing.assert_allclose(out[:27], ref[:27], rtol=1e-5, atol=1e-5)
    assert not out[27:].any() and np.isfinite(out).all()


@pytest.mark.parametrize("lhs_dtype, rhs_dtype", [(jnp.bfloat16, jnp.bfloat16), (jnp.bfloat16, jnp.float8_e4m3fn),
                                                  (jnp.float32, jnp.float32)])
def test_pallas_kernel_lowers_for_cuda(lhs_dtype, rhs_dtype):
    """The kernel's Pallas -> Triton lowering runs on the CPU: a broken kernel body shows up here (the GPU test
    above compiles and runs it). Qwen3-30B-A3B's gate_up at 256 decode tokens."""
    from jaxllm.ops.grouped_matmul.pallas_triton import grouped_matmul_pallas

    args = (jax.ShapeDtypeStruct((2048, 2048), lhs_dtype), jax.ShapeDtypeStruct((128, 2048, 1536), rhs_dtype),
            jax.ShapeDtypeStruct((128,), jnp.int32))
    text = jax.jit(grouped_matmul_pallas).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "triton" in text
    # no XLA while loop around the kernel: the GPU runtime drives one from the host, iteration by iteration
    assert "stablehlo.while" not in text
