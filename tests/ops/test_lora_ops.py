"""The batched LoRA product: every implementation equals the per-token reference, slot 0 adds nothing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from jaxllm.ops.lora import IMPLS, lora_delta


@pytest.mark.parametrize("impl", ["onehot", "ragged"])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_matches_reference(impl, dtype, tol):
    rng = np.random.default_rng(0)
    t, slots_n, rank = 37, 5, 8
    x = jnp.asarray(rng.standard_normal((t, 4, 8)), dtype)  # [T, H, Dh] input (as o_proj's)
    a = jnp.asarray(rng.standard_normal((4, 8, slots_n, rank)), dtype).at[:, :, 0].set(0)
    b = jnp.asarray(rng.standard_normal((slots_n, rank, 24)), dtype).at[0].set(0)
    slots = jnp.asarray(rng.integers(0, slots_n, t), jnp.int32)
    want = np.asarray(lora_delta(x, a, b, slots, impl="reference"), np.float32)
    got = np.asarray(lora_delta(x, a, b, slots, impl=impl), np.float32)
    assert got.shape == (t, 24)
    np.testing.assert_allclose(got, want, atol=tol * np.abs(want).max(), rtol=tol)
    assert np.all(got[np.asarray(slots) == 0] == 0)
    # each token's update is its own adapter's: x_t @ A[s] @ B[s]
    flat = np.asarray(x, np.float32).reshape(t, -1)
    s = int(slots[3])
    own = flat[3] @ np.asarray(a[:, :, s], np.float32).reshape(-1, rank) @ np.asarray(b[s], np.float32)
    np.testing.assert_allclose(got[3], own, atol=tol * np.abs(own).max() + 1e-6, rtol=tol)


def test_unknown_impl():
    with pytest.raises(ValueError, match="unknown LoRA implementation 'nope'"):
        lora_delta(jnp.zeros((2, 3)), jnp.zeros((3, 2, 1)), jnp.zeros((2, 1, 4)), jnp.zeros(2, jnp.int32), "nope")
    assert set(IMPLS) == {"onehot", "ragged", "reference"}
