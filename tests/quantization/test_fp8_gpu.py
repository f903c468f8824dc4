"""GPU: fp8 W8A8 (fp8_activations="dynamic") against the numpy emulation, at bf16 and Llama-8B-like sizes.
Run on the GPU machine (`bash scripts/device.sh gpu-tests`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_fp8_activations import np_w8a8

from jaxllm.models.quant import QuantizedWeight, linear

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("m", [1, 16, 256])
def test_w8a8_on_gpu_matches_numpy(m):
    w = QuantizedWeight((4096, 2, 1024), "fp8", ("embed", None, "mlp"), 1, nnx.Rngs(0), activations="dynamic")
    x = jax.random.normal(jax.random.key(m), (m, 4096), jnp.float32)
    out = jax.jit(lambda x: linear(x, w, "...d,dcf->...cf"))(x)
    want = np_w8a8(x, w.qweight[...], w.scale[...], 1).reshape(out.shape)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    # bf16 activations (the engine's case): the fp8 GEMM writes bf16, scaled after; within bf16 rounding of the
    # emulation over the same bf16-rounded input
    xb = x.astype(jnp.bfloat16)
    got = np.asarray(jax.jit(lambda x: linear(x, w, "...d,dcf->...cf"))(xb), np.float32)
    want_b = np_w8a8(xb.astype(jnp.float32), w.qweight[...], w.scale[...], 1).reshape(got.shape)
    np.testing.assert_allclose(got, want_b, rtol=2e-2, atol=1.5e-2 * np.abs(want_b).max())  # CPU: 0.7 of it
    hlo = jax.jit(lambda x: linear(x, w, "...d,dcf->...cf")).lower(x).compile().as_text()
    print("fp8 GEMM in the compiled program:", "f8e4m3fn" in hlo and ("cublas" in hlo.lower()))
