"""The exact-sampling kernel (jaxllm/ops/sampling/pallas_triton.py) needs a GPU to compile and run
(tests/ops/test_exact_sampling_gpu.py), but its Pallas -> Triton lowering runs on CPU: a kernel body Triton
cannot take shows up here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jaxllm.ops.sampling.pallas_triton import exact_rows_pallas


def test_lowers_for_cuda():
    s, v = 4, 1000
    args = (jax.ShapeDtypeStruct((s, v), jnp.float32), jnp.ones(s, bool), jnp.zeros(s), jnp.full(s, 5, jnp.int32),
            jnp.full(s, 0.9), jnp.ones(s), jnp.zeros((s, 2), jnp.uint32), jnp.zeros(s, jnp.int32))
    try:
        lowered = jax.jit(exact_rows_pallas).trace(*args).lower(lowering_platforms=("cuda",))
    except Exception as e:
        if "GPU" in str(e) or "cuda" in str(e).lower() and "device" in str(e).lower():
            pytest.skip(f"this jax lowers Triton kernels only with a GPU: {e}")
        raise
    assert "triton" in lowered.as_text().lower()
