"""Attention sinks (gpt-oss: a learned logit per query head that joins the softmax denominator, never the
output) in every paged-attention implementation: the jnp reference and chunked paths, and the Pallas kernel in
interpret mode (decode split-K, prefill, sliding window), against a naive float64 oracle on NaN-poisoned
ragged batches."""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from batches import make_batch, naive_attention
from jaxllm.ops.paged_attention import ragged_paged_attention
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


def test_pallas_rejects_sinks_of_the_wrong_shape():
    rng = np.random.default_rng(0)
    b = make_batch(rng, [3], [3], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=8)
    with pytest.raises(ValueError, match="sinks"):
        ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=0.3, interpret=True,
                                      sinks=jnp.zeros((3,), jnp.float32))
