"""The grouped matmul's bias and clamped-SwiGLU epilogue (gpt-oss's experts): the Pallas kernel (interpret mode
off the GPU, the real kernel on it) against the jnp path on the same slotted rows, with and without per-channel
scales."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxllm.ops.grouped_matmul import grouped_layout, grouped_matmul_slotted, layout_plan


def _case(g, k, n, rows_per_group, dtype, seed=0):
    rng = np.random.RandomState(seed)
    sizes = rng.multinomial(g * rows_per_group, np.ones(g) / g).astype(np.int32)
    sizes[0] = 0  # a group without rows
    m = int(sizes.sum())
    _, block_m = layout_plan(m, g, [(k, n // 2), (n // 2, k)], "pallas_triton")
    layout = grouped_layout(jnp.asarray(sizes), m, block_m)
    keys = jax.random.split(jax.random.key(seed), 4)
    lhs = jax.random.normal(keys[0], (layout.num_slots, k), jnp.float32).astype(dtype)
    rhs = (0.5 * jax.random.normal(keys[1], (g, k, n), jnp.float32)).astype(dtype)
    bias = jax.random.normal(keys[2], (g, n), jnp.float32).astype(dtype)
    scale = jax.random.uniform(keys[3], (g, n), jnp.float32, 0.5, 1.5)
    return lhs, rhs, bias, scale, layout


@pytest.mark.parametrize("swiglu,scaled", [(True, False), (True, True), (False, False), (False, True)])
def test_interpret_matches_jnp(swiglu, scaled):
    lhs, rhs, bias, scale, layout = _case(4, 32, 64, 9, jnp.float32)
    kw = {"bias": bias, "scale": scale if scaled else None, "swiglu": swiglu,
          "clamp": (1.702, 7.0) if swiglu else None}
    got = np.asarray(grouped_matmul_slotted(lhs, rhs, layout, impl="pallas_triton", **kw))
    want = np.asarray(grouped_matmul_slotted(lhs, rhs, layout, impl="reference", **kw))
    rows = np.asarray(layout.slot_group()) >= 0
    np.testing.assert_allclose(got[rows], want[rows], rtol=1e-5, atol=1e-5)
    if swiglu:  # the clamps bite in this case (|gate|, |up| > 7 somewhere), so the test would see them missing
        plain = np.asarray(grouped_matmul_slotted(lhs, rhs, layout, impl="reference", bias=kw["bias"],
                                                  scale=kw["scale"], out_dtype=jnp.float32))
        assert np.abs(plain[rows]).max() > 7.0


@pytest.mark.gpu
@pytest.mark.parametrize("rows_per_group", [1, 64])
def test_gpu_kernel_matches_jnp(rows_per_group):
    """gpt-oss-20b's expert shapes under TP 2 (32 experts, D 2880, F 1440) in bfloat16."""
    lhs, rhs, bias, _, layout = _case(32, 2880, 2 * 1440, rows_per_group, jnp.bfloat16)
    got = grouped_matmul_slotted(lhs, rhs, layout, impl="pallas_triton", bias=bias, swiglu=True,
                                 clamp=(1.702, 7.0)).astype(jnp.float32)
    want = grouped_matmul_slotted(lhs, rhs, layout, impl="reference", bias=bias, swiglu=True, clamp=(1.702, 7.0),
                                  out_dtype=jnp.float32)
    rows = np.asarray(layout.slot_group()) >= 0
    err = np.abs(np.asarray(got)[rows] - np.asarray(want)[rows]).max()
    assert err <= 0.02 * np.abs(np.asarray(want)[rows]).max()
