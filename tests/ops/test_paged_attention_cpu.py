"""CPU tests: the jnp implementations (reference, chunked) and the Pallas kernel in interpret mode against a
naive float64 dense causal attention, on random padded ragged batches with NaN-poisoned unused cache slots
and block-table entries."""

from __future__ import annotations

import functools
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from batches import make_batch, naive_attention
from jaxllm.ops.paged_attention import dispatch
from jaxllm.ops.paged_attention.chunked import key_groups, ragged_paged_attention_chunked
from jaxllm.ops.paged_attention.pallas_attention import ragged_paged_attention_pallas
from jaxllm.ops.paged_attention.pallas_triton import TileConfig
from jaxllm.ops.paged_attention.reference import ragged_paged_attention_reference

# (name, q_lens, ctx_lens): ctx_len = cached + new tokens; ctx > q means a prefix already in the cache.
BATCHES = [
    ("decode", [1, 1, 1, 1], [1, 17, 40, 95]),
    ("prefill", [5, 33, 64], [5, 33, 64]),
    ("mixed", [1, 20, 1, 7, 1], [60, 20, 3, 7, 128]),
    ("prefix_cached_first_chunk", [9, 16, 1], [41, 80, 33]),
]


def _check(out, want, n, tol):
    out = np.asarray(out, np.float64)[:n]
    assert not np.isnan(out).any(), "NaN leaked from a poisoned block"
    err = np.abs(out - want).max()
    assert err < tol, f"max abs error {err}"


@pytest.mark.parametrize("impl", [ragged_paged_attention_reference, ragged_paged_attention_chunked])
@pytest.mark.parametrize("name,q_lens,ctx_lens", BATCHES)
def test_jnp_impls_match_naive(impl, name, q_lens, ctx_lens):
    rng = np.random.default_rng(sum(map(ord, name)))
    b = make_batch(rng, q_lens, ctx_lens, num_q_heads=8, num_kv_heads=2, head_dim=64, block_size=16)
    out = impl(*map(jnp.asarray, b.args()), sm_scale=0.125, **({"token_chunk": 8, "key_chunk": 32}
                                                                  if impl is ragged_paged_attention_chunked else {}))
    _check(out, naive_attention(b, 0.125), b.meta.num_real_tokens, 1e-4)
    # padding tokens are zeros for the jnp implementations
    assert np.all(np.asarray(out)[b.meta.num_real_tokens:] == 0)


# (Hq, K, D, BS, sliding_window, soft_cap): GQA ratios 1/7/8/2/3, head dims 64/128/256, blocks 16..256.
SHAPES = [(4, 4, 64, 16, None, None), (14, 2, 128, 32, 7, None), (8, 1, 256, 64, None, 5.0),
          (4, 2, 64, 256, 20, 30.0), (6, 2, 128, 128, 300, None)]


@pytest.mark.parametrize("impl", [ragged_paged_attention_reference, ragged_paged_attention_chunked])
@pytest.mark.parametrize("hq,hk,d,bs,window,cap", SHAPES)
def test_jnp_impls_shapes_and_options(impl, hq, hk, d, bs, window, cap):
    rng = np.random.default_rng(hq * 1000 + d + bs)
    b = make_batch(rng, [1, 13, 1, 30], [70, 13, 5, 300], num_q_heads=hq, num_kv_heads=hk, head_dim=d,
                   block_size=bs)
    scale = d ** -0.5
    kw = {"token_chunk": 16, "key_chunk": 64} if impl is ragged_paged_attention_chunked else {}
    out = impl(*map(jnp.asarray, b.args()), sm_scale=scale, sliding_window=window, soft_cap=cap, **kw)
    _check(out, naive_attention(b, scale, window, cap), b.meta.num_real_tokens, 1e-4)


@pytest.mark.parametrize("name,q_lens,ctx_lens", BATCHES[2:])  # mixed covers decode + prefill
def test_pallas_interpret_matches_naive(name, q_lens, ctx_lens):
    rng = np.random.default_rng(sum(map(ord, name)))
    b = make_batch(rng, q_lens, ctx_lens, num_q_heads=4, num_kv_heads=2, head_dim=32, block_size=16,
                   garbage=10**6)
    out = ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=0.2, interpret=True)
    _check(out, naive_attention(b, 0.2), b.meta.num_real_tokens, 1e-4)


@pytest.mark.parametrize("window,cap,splits", [(None, 3.0, 3), (9, 20.0, 2)])
def test_pallas_interpret_options_and_splits(window, cap, splits):
    """Small tiles so that one sequence spans many KV tiles, split-K and the masked/unmasked loops."""
    rng = np.random.default_rng(splits + (window or 0))
    b = make_batch(rng, [1, 19, 1, 2], [77, 40, 3, 50], num_q_heads=6, num_kv_heads=2, head_dim=16,
                   block_size=8)
    out = ragged_paged_attention_pallas(
        *map(jnp.asarray, b.args()), sm_scale=0.3, sliding_window=window, soft_cap=cap, interpret=True,
        decode_cfg=TileConfig(block_q=2, block_n=16, num_splits=splits),
        prefill_cfg=TileConfig(block_q=4, block_n=8))
    _check(out, naive_attention(b, 0.3, window, cap), b.meta.num_real_tokens, 1e-4)


@pytest.mark.parametrize("head_dim,window,cap,splits", [(24, None, None, 1), (96, 9, 20.0, 2)])
def test_pallas_interpret_head_dim_not_a_power_of_two(head_dim, window, cap, splits):
    """Phi-3's D = 96 (and 24): tiles padded to the next power of two, the extra columns masked on load and store
    (decode with split-K, prefill, window and soft cap)."""
    rng = np.random.default_rng(head_dim)
    b = make_batch(rng, [1, 19, 1, 2], [77, 40, 3, 50], num_q_heads=4, num_kv_heads=2, head_dim=head_dim,
                   block_size=8)
    out = ragged_paged_attention_pallas(
        *map(jnp.asarray, b.args()), sm_scale=0.3, sliding_window=window, soft_cap=cap, interpret=True,
        decode_cfg=TileConfig(block_q=2, block_n=16, num_splits=splits),
        prefill_cfg=TileConfig(block_q=4, block_n=8))
    assert out.shape[-1] == head_dim
    _check(out, naive_attention(b, 0.3, window, cap), b.meta.num_real_tokens, 1e-4)


def test_pallas_interpret_split_decode_only():
    """Split-K with no prefill launch at all (T <= BQ_A): merged rows scattered into a fresh output."""
    rng = np.random.default_rng(2)
    b = make_batch(rng, [1], [77], num_q_heads=4, num_kv_heads=2, head_dim=16, block_size=8, pad_tokens=0,
                   pad_seqs=2)
    out = ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=0.3, interpret=True,
                                        decode_cfg=TileConfig(block_q=2, block_n=16, num_splits=3))
    _check(out, naive_attention(b, 0.3), b.meta.num_real_tokens, 1e-4)


def test_dispatch_defaults_and_forcing():
    assert dispatch.default_impl() == "chunked"  # CPU
    rng = np.random.default_rng(0)
    b = make_batch(rng, [1, 3], [9, 3])
    with pytest.raises(ValueError, match="bogus"):
        dispatch.ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=1.0, impl="bogus")
    out = dispatch.ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=1.0, impl="chunked")
    _check(out, naive_attention(b, 1.0), b.meta.num_real_tokens, 1e-4)
    # an AttentionConfig carries the name (and the Pallas kernels' tuning, which the jnp paths do not have)
    config = dispatch.AttentionConfig("chunked", decode_splits=2, fp8_dot="f16")
    same = dispatch.ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=1.0, impl=config)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(out))
    with pytest.raises(ValueError, match="bogus"):
        dispatch.ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=1.0,
                                        impl=dispatch.AttentionConfig("bogus"))


def test_pallas_rejects_bad_input():
    rng = np.random.default_rng(0)
    b = make_batch(rng, [1], [4], head_dim=20)
    with pytest.raises(ValueError, match="head_dim=20"):
        ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=1.0, interpret=True)
    b = make_batch(rng, [1], [4])
    with pytest.raises(ValueError, match="sliding_window=0"):
        ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=1.0, sliding_window=0)


@pytest.mark.parametrize("window", [1, 33, 45, 64])
def test_chunked_window_scans_only_the_window(window):
    """With a sliding window the chunked path's key loop spans ceil((w - 1) / key_len) + 1 groups from each
    token's first visible key (pages before the window are never gathered) and still matches the oracle, with
    tokens of several sequences (different window starts) in one token chunk."""
    rng = np.random.default_rng(window)
    b = make_batch(rng, [1, 13, 1, 30, 7], [70, 13, 5, 300, 200], num_q_heads=4, num_kv_heads=2, head_dim=32,
                   block_size=16)
    args = tuple(map(jnp.asarray, b.args()))
    run = functools.partial(ragged_paged_attention_chunked, sm_scale=0.2, sliding_window=window, token_chunk=16,
                            key_chunk=32)
    _check(run(*args), naive_attention(b, 0.2, window), b.meta.num_real_tokens, 1e-4)
    # the key loop's trips: the groups a window spans (of 10 groups without a window)
    pos = jnp.asarray([299, 250, 5, 0], jnp.int32)
    _, trips = key_groups(pos, pos + 1, 32, 10, window)
    assert int(trips) == min(-(-(window - 1) // 32) + 1, 10, -(-300 // 32))


def test_chunked_key_loop_follows_the_context():
    """Without a window the key loop covers the groups the chunk's longest context reaches, not the block
    table's width; a chunk of padding tokens runs none (a step's cost follows its real context)."""
    pos = jnp.asarray([4, 40, 70, 0], jnp.int32)
    kv_len = jnp.asarray([5, 41, 71, 0], jnp.int32)
    group0, trips = key_groups(pos, kv_len, 32, 100)
    assert group0.tolist() == [0, 0, 0, 0] and int(trips) == 3
    assert int(key_groups(pos, jnp.zeros(4, jnp.int32), 32, 100)[1]) == 0
    assert int(key_groups(pos, kv_len, 32, 2)[1]) == 2

