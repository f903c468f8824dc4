"""W8A8 for fp8 weights (fp8_activations="dynamic"; the default on sm_89+ GPUs): per-token e4m3 activations times e4m3 weights
with float32 accumulation, checked against a numpy emulation (ml_dtypes) on the CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from hf_models import save_tiny_model

import jaxllm
from jaxllm.models.quant import QuantizedWeight, linear, resolve_fp8_activations


def np_w8a8(x, qweight, scale, in_ndim):
    """numpy: quantize x per token over the last ``in_ndim`` dims to e4m3, multiply in float64."""
    x = np.asarray(x, np.float32)
    axes = tuple(range(x.ndim - in_ndim, x.ndim))
    amax = np.abs(x).max(axis=axes, keepdims=True)
    xs = np.where(amax > 0, amax / np.float32(448), np.float32(1)).astype(np.float32)
    xq = np.clip(x / xs, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * xs
    w = np.asarray(qweight.astype(jnp.float32), np.float64) * np.asarray(scale, np.float64)
    k = int(np.prod(x.shape[x.ndim - in_ndim:]))
    return xq.reshape(*x.shape[:x.ndim - in_ndim], k) @ w.reshape(k, -1)


@pytest.mark.parametrize("shape,axes,in_ndim,subscripts", [
    ((32, 4, 8), ("embed", "q_heads", "head_dim"), 1, "...d,dhk->...hk"),
    ((4, 8, 32), ("q_heads", "head_dim", "embed"), 2, "...hk,hkd->...d"),
])
def test_linear_w8a8_matches_numpy(shape, axes, in_ndim, subscripts):
    x = jax.random.normal(jax.random.key(1), (5, *shape[:in_ndim]), jnp.float32)
    x = x.at[2].set(0.0)  # an all-zero token
    weight_only = linear(x, QuantizedWeight(shape, "fp8", axes, in_ndim, nnx.Rngs(0)), subscripts)
    w = QuantizedWeight(shape, "fp8", axes, in_ndim, nnx.Rngs(0), activations="dynamic")  # fixed when built
    assert w.activations == "dynamic"
    out = linear(x, w, subscripts)
    want = np_w8a8(x, w.qweight[...], w.scale[...], in_ndim).reshape(out.shape)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(out)[2] == 0)
    err = np.abs(np.asarray(out) - np.asarray(weight_only)).max() / np.abs(np.asarray(weight_only)).max()
    assert 0 < err < 0.1  # activation rounding only
    jaxpr = jax.make_jaxpr(lambda x: linear(x, w, subscripts))(x)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jnp.float8_e4m3fn for v in dots[0].invars)
    # the same product with the weight stored K-minor, as after loading (jaxllm.weights.fp8_layout)
    perm = tuple(range(in_ndim, len(shape))) + tuple(range(in_ndim))
    w.qweight = nnx.Param(jnp.transpose(w.qweight[...], perm))
    w.k_minor = True
    np.testing.assert_allclose(np.asarray(linear(x, w, subscripts)), want, rtol=1e-5, atol=1e-6)
    dot = next(e for e in jax.make_jaxpr(lambda x: linear(x, w, subscripts))(x).eqns
                if e.primitive.name == "dot_general")
    (_, rhs_contract), _ = dot.params["dimension_numbers"]
    assert tuple(rhs_contract) == tuple(range(len(shape) - in_ndim, len(shape)))  # K is the weight's minor dim
    # bf16 activations: the fp8 GEMM writes bf16 (half the bytes of float32; faster on the H200), scales after
    xb = x.astype(jnp.bfloat16)
    dot = next(e for e in jax.make_jaxpr(lambda x: linear(x, w, subscripts))(xb).eqns
               if e.primitive.name == "dot_general")
    assert dot.outvars[0].aval.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(linear(xb, w, subscripts), np.float32), want, rtol=0.02, atol=0.02)


def test_model_w8a8_and_bad_mode(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    x = np.random.RandomState(0).randint(0, 256, (2, 16)).astype(np.int32)
    ref = np.asarray(jaxllm.load_model(tmp_path, quantization="fp8")(x))
    model = jaxllm.load_model(tmp_path, quantization="fp8", fp8_activations="dynamic")
    out = np.asarray(model(x))
    assert 0 < np.abs(out - ref).max() / np.abs(ref).max() < 0.1
    # stored K-minor for cuBLASLt's fp8 GEMM: qweight [*out_dims, *in_dims], contracted as its trailing dims
    weights = [m for _, m in nnx.iter_graph(model) if isinstance(m, QuantizedWeight)]
    assert weights and all(w.k_minor and w.qweight[...].shape[:w.scale[...].ndim] == w.scale[...].shape
                           for w in weights)
    tp2 = np.asarray(jaxllm.load_model(tmp_path, quantization="fp8", tensor_parallel_size=2,
                                       fp8_activations="dynamic")(x))
    np.testing.assert_allclose(tp2, out, rtol=1e-5, atol=1e-5 * np.abs(out).max())
    with pytest.raises(ValueError, match="fp8_activations='static' is not supported"):
        jaxllm.load_model(tmp_path, quantization="fp8", fp8_activations="static")
    with pytest.raises(ValueError, match="fp8_activations='static' is not supported"):
        resolve_fp8_activations("static")


def test_auto_mode_follows_fp8_tensor_cores(monkeypatch):
    """"auto" (the default): W8A8 on GPUs with fp8 tensor cores (sm_89+), weight-only on older GPUs and off the
    GPU, as vLLM's quantization="fp8" does; an explicit mode wins everywhere. The mode is fixed when a weight is
    built (ModelConfig.fp8_activations)."""
    from jaxllm.models import quant
    for cc, want in ((None, "none"), ((8, 0), "none"), ((8, 6), "none"), ((8, 9), "dynamic"), ((9, 0), "dynamic")):
        monkeypatch.setattr(quant, "gpu_compute_capability", lambda cc=cc: cc)
        assert resolve_fp8_activations("auto") == want, cc
        assert resolve_fp8_activations("none") == "none"
        assert resolve_fp8_activations("dynamic") == "dynamic"
    w = QuantizedWeight((32, 4, 8), "fp8", ("embed", "q_heads", "head_dim"), 1, nnx.Rngs(0), activations="dynamic")
    assert w.activations == "dynamic"
    assert QuantizedWeight((32, 4, 8), "fp8", ("embed", "q_heads", "head_dim"), 1, nnx.Rngs(0)).activations == "none"
    int8 = QuantizedWeight((32, 4, 8), "int8", ("embed", "q_heads", "head_dim"), 1, nnx.Rngs(0), activations="dynamic")
    assert int8.activations == "none"
