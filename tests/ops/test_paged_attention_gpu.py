"""GPU tests: every GPU implementation of ragged paged attention against the memory-safe jnp implementation
run in float32 on the same (bf16-rounded) inputs, over a grid of batch sizes, context lengths, block sizes,
head dims and GQA ratios. Fresh random inputs each run (the seed is in the failure message); unused cache
slots are NaN and unused block-table entries point at a NaN block or far out of range. fp8 caches (e4m3 / e5m2
with per-layer scales) are checked against the same float32 path on their dequantized values."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from batches import make_metadata
from jaxllm.ops.paged_attention import dispatch
from jaxllm.ops.paged_attention.chunked import ragged_paged_attention_chunked
from jaxllm.ops.paged_attention.kv_cache import dequantize_fp8, quantize_fp8

pytestmark = pytest.mark.gpu
GPU_IMPLS = ["pallas_triton"]


def _run_case(impl, q_lens, ctx_lens, *, hq=32, hk=8, d=128, bs=16, window=None, cap=None,
              dtype=jnp.bfloat16, garbage=None, kv_dtype=None, scales=(0.05, 0.3)):
    """kv_dtype: a float8 dtype for an fp8 cache (K/V quantized with ``scales``), None for q's dtype."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    m = make_metadata(rng, q_lens, ctx_lens, block_size=bs, garbage=garbage, pad_seqs=2, pad_tokens=5)
    nb = m.slot_used.shape[0]
    kq, kk = jax.random.split(jax.random.key(seed))
    kv = jax.random.normal(kk, (2, nb, bs, hk, d), jnp.float32).astype(dtype)
    kv = jnp.where(jnp.asarray(m.slot_used)[None, :, :, None, None], kv, jnp.nan)
    q = jax.random.normal(kq, (m.num_tokens, hq, d), jnp.float32).astype(dtype)
    meta = [jnp.asarray(x) for x in (m.query_start_loc, m.seq_lens, m.block_tables)]
    scale = d ** -0.5
    kw = {}
    kv32 = kv.astype(jnp.float32)
    if kv_dtype is not None:
        kv = jnp.stack([quantize_fp8(kv[i], scales[i], kv_dtype) for i in (0, 1)])
        kv32 = jnp.stack([dequantize_fp8(kv[i], scales[i]) for i in (0, 1)])
        kw = {"k_scale": jnp.float32(scales[0]), "v_scale": jnp.float32(scales[1])}  # traced, as in the model
    out = jax.jit(lambda *a, **s: dispatch.ragged_paged_attention(*a, sm_scale=scale, sliding_window=window,
                                                                  soft_cap=cap, impl=impl, **s))(q, kv, *meta, **kw)
    want = jax.jit(lambda *a: ragged_paged_attention_chunked(*a, sm_scale=scale, sliding_window=window,
                                                             soft_cap=cap))(q.astype(jnp.float32), kv32, *meta)
    n = m.num_real_tokens
    out = np.asarray(out.astype(jnp.float32))[:n]
    want = np.asarray(want)[:n]
    where = f"seed={seed} q_lens[:4]={list(q_lens[:4])} ctx[:4]={list(ctx_lens[:4])} d={d} bs={bs} kv={kv.dtype}"
    assert not np.isnan(out).any(), f"NaN in output ({where})"
    err = np.abs(out - want).max()
    rel = np.linalg.norm(out - want) / max(np.linalg.norm(want), 1e-6)
    assert err < 4e-2 and rel < 1.5e-2, f"max abs err {err:.3g}, rel {rel:.3g} ({where})"


def _rand_lens(rng, n, lo, hi):
    return [int(x) for x in rng.integers(lo, hi + 1, n)]


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("batch,max_ctx", [(1, 32768), (3, 20000), (64, 2048), (256, 2048), (200, 300)])
def test_decode(impl, batch, max_ctx):
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, batch, 1, max_ctx)
    ctx[0] = max_ctx
    _run_case(impl, [1] * batch, ctx)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("q_lens,ctx_lens", [
    ([2048], [2048]),
    ([512, 77, 1000], [3000, 77, 1000]),  # prefix-cached first chunks
    ([3, 16, 17, 5], [3, 400, 17, 9000]),  # short chunks on both sides of the decode/prefill split
])
def test_prefill(impl, q_lens, ctx_lens):
    _run_case(impl, q_lens, ctx_lens)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("hq,hk,d,bs", [(14, 2, 64, 32), (8, 8, 256, 64), (32, 4, 128, 128), (16, 8, 64, 256),
                                        (32, 32, 96, 16)])  # Phi-3-mini: D = 96 (tiles padded to 128)
def test_mixed_shapes(impl, hq, hk, d, bs):
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, 100, 1, 3000)
    q_lens = [1] * 100 + [700, 33]
    ctx = ctx + [1500, 33]
    _run_case(impl, q_lens, ctx, hq=hq, hk=hk, d=d, bs=bs, garbage=10**8)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("window,cap,d", [(256, None, 128), (1000, 30.0, 128), (4096, 50.0, 256), (2047, None, 96)])
def test_window_and_softcap(impl, window, cap, d):
    """Gemma 2 (window 4096, cap 50, D = 256) and Phi-3-mini (window 2047, D = 96) among them."""
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, 40, 1, 6000) + [5000]
    _run_case(impl, [1] * 40 + [900], ctx, window=window, cap=cap, d=d)


@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_fp16_and_fp32(impl):
    _run_case(impl, [1, 1, 300], [50, 2000, 300], dtype=jnp.float16)
    _run_case(impl, [1, 1, 300], [50, 2000, 300], dtype=jnp.float32)


FP8 = [jnp.float8_e4m3fn, jnp.float8_e5m2]


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("kv_dtype", FP8)
@pytest.mark.parametrize("batch,max_ctx", [(1, 32768), (128, 2048), (200, 300)])
def test_fp8_cache_decode(impl, kv_dtype, batch, max_ctx):
    """Split-K (1 long sequence) and plain decode launches reading an fp8 cache."""
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, batch, 1, max_ctx)
    ctx[0] = max_ctx
    _run_case(impl, [1] * batch, ctx, kv_dtype=kv_dtype)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("kv_dtype", FP8)
def test_fp8_cache_prefill_and_mixed(impl, kv_dtype):
    _run_case(impl, [2048], [2048], kv_dtype=kv_dtype)
    _run_case(impl, [512, 77, 1000], [3000, 77, 1000], kv_dtype=kv_dtype, scales=(1.0, 1.0))
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, 100, 1, 3000) + [1500, 33]
    _run_case(impl, [1] * 100 + [700, 33], ctx, hq=14, hk=2, d=64, bs=32, garbage=10**8, kv_dtype=kv_dtype)


@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_fp8_cache_options_and_dtypes(impl):
    rng = np.random.default_rng()
    ctx = _rand_lens(rng, 40, 1, 4000) + [1200]
    _run_case(impl, [1] * 40 + [900], ctx, window=1000, cap=30.0, kv_dtype=jnp.float8_e4m3fn)
    _run_case(impl, [1, 1, 300], [50, 2000, 300], dtype=jnp.float16, kv_dtype=jnp.float8_e4m3fn)
    _run_case(impl, [1, 1, 300], [50, 2000, 300], dtype=jnp.float32, kv_dtype=jnp.float8_e5m2)
    _run_case(impl, [1, 300], [4000, 300], d=256, bs=64, hq=8, hk=8, kv_dtype=jnp.float8_e4m3fn)


def test_dispatch_picks_pallas_on_sm80_plus():
    cc = dispatch.gpu_compute_capability()
    assert cc is not None
    if cc >= (8, 0):  # Hopper: the Mosaic GPU prefill for long prefills, the Triton kernels for the rest
        assert dispatch.default_impl() == ("pallas_mosaic" if cc[0] == 9 else "pallas_triton")
