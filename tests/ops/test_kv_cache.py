"""KV cache allocation and write_kv_cache (the scatter through slot_mapping)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxllm.ops.paged_attention import allocate_kv_cache, write_kv_cache


def test_allocate_shape_and_dtype():
    caches = allocate_kv_cache(3, 5, 16, 2, 64, dtype=jnp.float32)
    assert len(caches) == 3
    assert caches[0].shape == (2, 5, 16, 2, 64) and caches[0].dtype == jnp.float32


def test_write_scatters_and_skips_padding():
    rng = np.random.default_rng(0)
    nb, bs, nk, d = 6, 4, 2, 8
    cache = rng.standard_normal((2, nb, bs, nk, d)).astype(np.float32)
    k = rng.standard_normal((5, nk, d)).astype(np.float32)
    v = rng.standard_normal((5, nk, d)).astype(np.float32)
    slots = np.array([3, 17, -1, 0, -1], np.int32)
    out = np.asarray(jax.jit(write_kv_cache, donate_argnums=0)(jnp.asarray(cache), k, v, slots))
    want = cache.reshape(2, nb * bs, nk, d).copy()
    for i, s in enumerate(slots):
        if s >= 0:
            want[0, s], want[1, s] = k[i], v[i]
    np.testing.assert_array_equal(out.reshape(want.shape), want)


def test_write_rejects_mismatched_shapes():
    cache = jnp.zeros((2, 2, 4, 2, 8))
    with pytest.raises(ValueError, match="slot_mapping"):
        write_kv_cache(cache, jnp.zeros((3, 2, 8)), jnp.zeros((3, 2, 8)), jnp.zeros((4,), jnp.int32))
