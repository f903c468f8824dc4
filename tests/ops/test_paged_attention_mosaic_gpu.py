"""Hopper (sm_90) correctness of the paged Mosaic GPU prefill (ops/paged_attention/mosaic_prefill.py) against
the naive dense oracle, through ``ragged_paged_attention_pallas(prefill_impl="mosaic")``: prefill-only, mixed
and prefix-cached batches, GQA 1-8, head_dim 64 / 128, block sizes 16-128. Unused blocks and block-table entries
are NaN-poisoned as in the other tests; the tails of used pages hold finite values (the kernel loads whole pages:
see the module docstring). Run on the GPU machine:
``python -m pytest tests/ops/test_paged_attention_mosaic_gpu.py -q``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from batches import make_batch, naive_attention
from jaxllm.ops.device_info import gpu_compute_capability

pytestmark = [pytest.mark.gpu, pytest.mark.skipif((gpu_compute_capability() or (0,))[0] != 9,
                                                  reason="the Mosaic GPU prefill is Hopper-only (wgmma/TMA)")]

from jaxllm.ops.paged_attention.pallas_attention import ragged_paged_attention_pallas


def finite_tails(b):
    """Slots of used blocks that hold no token: finite (zero), as the engine's zero-filled cache has them."""
    used_blocks = b.meta.slot_used.any(axis=1)
    tail = used_blocks[:, None] & ~b.meta.slot_used
    b.kv_cache[:, tail] = 0
    return b


@pytest.mark.parametrize("q_lens,ctx_lens", [([300], [300]), ([1000, 37, 1, 129], [1000, 500, 77, 129]),
                                             ([64, 64, 1, 1, 200], [64, 1000, 5, 3000, 260])])
@pytest.mark.parametrize("heads,head_dim,block_size", [((32, 8), 128, 16), ((8, 8), 64, 32), ((16, 2), 128, 128)])
@pytest.mark.parametrize("min_q_len", [1, 150])  # every prefill sequence through the kernel / the long ones only
def test_mosaic_prefill_matches_naive(q_lens, ctx_lens, heads, head_dim, block_size, min_q_len):
    rng = np.random.default_rng(sum(q_lens) + head_dim + block_size)
    b = finite_tails(make_batch(rng, q_lens, ctx_lens, num_q_heads=heads[0], num_kv_heads=heads[1],
                                head_dim=head_dim, block_size=block_size, dtype=np.float32))
    q, kv, qsl, sl, bt = b.args()
    args = (jnp.asarray(q, jnp.bfloat16), jnp.asarray(kv, jnp.bfloat16), jnp.asarray(qsl), jnp.asarray(sl),
            jnp.asarray(bt))
    out = ragged_paged_attention_pallas(*args, sm_scale=head_dim ** -0.5, prefill_impl="mosaic",
                                        mosaic_min_q_len=min_q_len)
    want = naive_attention(b, head_dim ** -0.5)
    got = np.asarray(out, np.float32)[:b.meta.num_real_tokens]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("heads,head_dim,block_size", [((16, 8), 128, 16), ((8, 4), 64, 32)])
def test_mosaic_prefill_soft_cap_matches_naive(heads, head_dim, block_size):
    """Gemma 2's global layers: scores cap * tanh(s / cap) inside the kernel (cap 50 with large scores, so the
    cap changes the result)."""
    q_lens, ctx_lens = [1000, 37, 1, 129], [1000, 500, 77, 129]
    rng = np.random.default_rng(7)
    b = finite_tails(make_batch(rng, q_lens, ctx_lens, num_q_heads=heads[0], num_kv_heads=heads[1],
                                head_dim=head_dim, block_size=block_size, dtype=np.float32))
    b.q *= 8.0
    q, kv, qsl, sl, bt = b.args()
    args = (jnp.asarray(q, jnp.bfloat16), jnp.asarray(kv, jnp.bfloat16), jnp.asarray(qsl), jnp.asarray(sl),
            jnp.asarray(bt))
    out = ragged_paged_attention_pallas(*args, sm_scale=head_dim ** -0.5, soft_cap=5.0, prefill_impl="mosaic",
                                        mosaic_min_q_len=100)
    want = naive_attention(b, head_dim ** -0.5, soft_cap=5.0)
    got = np.asarray(out, np.float32)[:b.meta.num_real_tokens]
    assert np.isfinite(got).all()
    assert np.abs(want - naive_attention(b, head_dim ** -0.5)).max() > 0.1  # the cap matters here
    # q * 8 makes the softmax peaky, so the bf16 probabilities of the P @ V product round coarsely: on an H100 5
    # of 2.4M outputs were 0.04-0.05 off (at 3e-2 tolerance). The mean error stays tight.
    np.testing.assert_allclose(got, want, atol=6e-2, rtol=6e-2)
    assert np.abs(got - want).mean() < 3e-3
