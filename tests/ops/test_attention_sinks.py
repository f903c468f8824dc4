"""Attention sinks (gpt-oss: a learned logit per query head that joins the softmax denominator, never the
output) in every paged-attention implementation: the jnp reference and chunked paths, and the Pallas kernel in
interpret mode (decode split-K, prefill, sliding window), against a naive float64 oracle on NaN-poisoned
ragged batches."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from batches import make_batch, naive_attention
from jaxllm.ops.device_info import gpu_compute_capability
from jaxllm.ops.paged_attention import AttentionConfig, ragged_paged_attention
from jaxllm.ops.paged_attention.chunked import ragged_paged_attention_chunked
from jaxllm.ops.paged_attention.kv_cache import quantize_fp8
from jaxllm.ops.paged_attention.pallas_attention import ragged_paged_attention_pallas
from jaxllm.ops.paged_attention.pallas_triton import TileConfig

Q_LENS, CTX_LENS = [1, 19, 1, 2], [77, 40, 3, 50]


def _sinks(rng, hq):
    return (rng.standard_normal(hq) * 2.0).astype(np.float32)  # some above, some below the scores


def _check(out, want, n):
    out = np.asarray(out, np.float64)[:n]
    assert not np.isnan(out).any(), "NaN leaked from a poisoned block"
    assert np.abs(out - want).max() < 1e-4


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("window", [None, 9])
def test_jnp_impls_with_sinks(impl, window):
    rng = np.random.default_rng(7 + (window or 0))
    b = make_batch(rng, Q_LENS, CTX_LENS, num_q_heads=6, num_kv_heads=2, head_dim=16, block_size=8)
    sinks = _sinks(rng, 6)
    out = ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=0.3, sliding_window=window,
                                 sinks=jnp.asarray(sinks), impl=impl)
    want = naive_attention(b, 0.3, window, sinks=sinks)
    _check(out, want, b.meta.num_real_tokens)
    assert np.all(np.asarray(out)[b.meta.num_real_tokens:] == 0)  # padding tokens stay zeros
    # the sinks change the result (a test that cannot pass without them)
    assert np.abs(want - naive_attention(b, 0.3, window)).max() > 1e-2


@pytest.mark.parametrize("window,cap,splits", [(None, None, 1), (None, 3.0, 3), (9, None, 2)])
def test_pallas_interpret_with_sinks(window, cap, splits):
    """Small tiles: one sequence spans many KV tiles; split-K counts the sink once (split 0)."""
    rng = np.random.default_rng(splits + (window or 0))
    b = make_batch(rng, Q_LENS, CTX_LENS, num_q_heads=6, num_kv_heads=2, head_dim=16, block_size=8)
    sinks = _sinks(rng, 6)
    out = ragged_paged_attention_pallas(
        *map(jnp.asarray, b.args()), sm_scale=0.3, sliding_window=window, soft_cap=cap, interpret=True,
        sinks=jnp.asarray(sinks), decode_cfg=TileConfig(block_q=2, block_n=16, num_splits=splits),
        prefill_cfg=TileConfig(block_q=4, block_n=8))
    _check(out, naive_attention(b, 0.3, window, cap, sinks=sinks), b.meta.num_real_tokens)


@pytest.mark.parametrize("fp8_dot,splits", [("auto", 2), ("f16", 1)])
def test_fp8_cache_with_sinks(fp8_dot, splits):
    """A float8 cache: k_scale folded into the scores and v_scale into the output leave the sink (a plain logit)
    alone, in the chunked path and the kernel (fp8_dot="f16": q pre-scaled, scores already in log2 units)."""
    rng = np.random.default_rng(3 + splits)
    b = make_batch(rng, Q_LENS, CTX_LENS, num_q_heads=6, num_kv_heads=2, head_dim=16, block_size=8)
    kv = jnp.asarray(b.kv_cache)
    kv8 = jnp.stack([quantize_fp8(kv[0], 0.01, jnp.float8_e4m3fn), quantize_fp8(kv[1], 0.25, jnp.float8_e4m3fn)])
    deq = np.asarray(kv8.astype(jnp.float32), np.float64) * np.array([0.01, 0.25])[:, None, None, None, None]
    sinks = _sinks(rng, 6)
    q = jnp.asarray(b.q, jnp.bfloat16 if fp8_dot == "f16" else jnp.float32)
    want = naive_attention(type(b)(np.asarray(q, np.float32), deq, b.meta), 0.3, sinks=sinks)
    meta = [jnp.asarray(x) for x in b.args()[2:]]
    kw = {"sm_scale": 0.3, "k_scale": 0.01, "v_scale": 0.25, "sinks": jnp.asarray(sinks)}
    n, tol = b.meta.num_real_tokens, 2e-2 if fp8_dot == "f16" else 1e-4
    out = ragged_paged_attention_pallas(q, kv8, *meta, **kw, interpret=True, fp8_dot=fp8_dot,
                                        decode_cfg=TileConfig(block_q=2, block_n=16, num_splits=splits),
                                        prefill_cfg=TileConfig(block_q=4, block_n=8))
    assert np.abs(np.asarray(out, np.float64)[:n] - want).max() < tol
    chunked = ragged_paged_attention(q, kv8, *meta, **kw, impl="chunked")
    assert np.abs(np.asarray(chunked, np.float64)[:n] - want).max() < tol


def test_pallas_rejects_sinks_of_the_wrong_shape():
    rng = np.random.default_rng(0)
    b = make_batch(rng, [3], [3], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=8)
    with pytest.raises(ValueError, match="sinks"):
        ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=0.3, interpret=True,
                                      sinks=jnp.zeros((3,), jnp.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["pallas_triton", "pallas_mosaic"])
@pytest.mark.parametrize("window,splits", [(None, None), (128, None), (None, 4)])
def test_gpu_kernels_with_sinks(impl, window, splits):
    """gpt-oss's shapes (64 q heads, 8 kv heads, D=64) in bf16 against the float32 chunked path: decodes, short
    and long prefills (pallas_mosaic keeps prefills with sinks on the Triton launch), split-K decodes."""
    cc = gpu_compute_capability()
    if impl == "pallas_mosaic" and (cc is None or cc[0] != 9):
        pytest.skip("pallas_mosaic needs Hopper")
    rng = np.random.default_rng(11)
    b = make_batch(rng, [1, 1, 700, 1, 33], [900, 40, 1500, 3, 33], num_q_heads=64, num_kv_heads=8, head_dim=64,
                   block_size=16)
    sinks = jnp.asarray(_sinks(rng, 64))
    q, kv = jnp.asarray(b.q).astype(jnp.bfloat16), jnp.asarray(b.kv_cache).astype(jnp.bfloat16)
    meta = [jnp.asarray(x) for x in b.args()[2:]]
    out = jax.jit(lambda *a: ragged_paged_attention(*a, sm_scale=0.125, sliding_window=window, sinks=sinks,
                                                    impl=AttentionConfig(impl, decode_splits=splits)))(q, kv, *meta)
    want = ragged_paged_attention_chunked(q.astype(jnp.float32), kv.astype(jnp.float32), *meta, sm_scale=0.125,
                                          sliding_window=window, sinks=sinks)
    n = b.meta.num_real_tokens
    out, want = np.asarray(out.astype(jnp.float32))[:n], np.asarray(want)[:n]
    assert not np.isnan(out).any()
    assert np.abs(out - want).max() < 4e-2
