"""The paged Mosaic GPU prefill (ops/paged_attention/mosaic_prefill.py) needs a Hopper GPU to compile and
run (tests/ops/test_paged_attention_mosaic_gpu.py), but its Pallas lowering runs on CPU: a broken kernel body or
a jax API change shows up here. Also: the slot -> token gather, and which calls the kernel covers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from batches import make_batch
from jaxllm.ops.paged_attention import mosaic_prefill
from jaxllm.ops.paged_attention.pallas_attention import ragged_paged_attention_pallas
from jaxllm.ops.paged_attention.pallas_triton import prefill_schedule


def bf16_args(q_lens, ctx_lens, heads, head_dim, block_size):
    """A random ragged batch's (q, kv cache) as bf16 shapes and its metadata as arrays: what lowering needs."""
    b = make_batch(np.random.default_rng(0), q_lens, ctx_lens, num_q_heads=heads[0], num_kv_heads=heads[1],
                   head_dim=head_dim, block_size=block_size)
    q, kv, qsl, sl, bt = b.args()
    return (jax.ShapeDtypeStruct(q.shape, jnp.bfloat16), jax.ShapeDtypeStruct(kv.shape, jnp.bfloat16),
            jnp.asarray(qsl), jnp.asarray(sl), jnp.asarray(bt))


@pytest.mark.parametrize("heads,head_dim,block_size", [((32, 8), 128, 16), ((8, 8), 64, 32), ((16, 2), 128, 128)])
def test_lowers_for_hopper(heads, head_dim, block_size):
    args = bf16_args([1000, 37, 1, 129], [1000, 500, 77, 129], heads, head_dim, block_size)
    lowered = jax.jit(lambda *a: ragged_paged_attention_pallas(*a, sm_scale=head_dim ** -0.5, prefill_impl="mosaic",
                                                               mosaic_min_q_len=100)
                      ).trace(*args).lower(lowering_platforms=("cuda",))
    assert "mosaic_gpu" in lowered.as_text()


@pytest.mark.parametrize("heads,head_dim,block_size,soft_cap", [((32, 8), 128, 16, None), ((16, 2), 128, 128, None),
                                                                ((16, 8), 128, 16, 50.0)])
def test_kernel_alone_lowers_for_hopper(heads, head_dim, block_size, soft_cap):
    """The Mosaic kernel without the Triton decode / prefill around it: jax 0.11's Triton lowering needs a GPU
    device, so this is the check that also runs under the GPU machine's jax version on a CPU machine."""
    args = bf16_args([1000, 129], [1000, 300], heads, head_dim, block_size)
    bq = mosaic_prefill.block_q(*heads)
    slots = args[0].shape[0] // bq + args[0].shape[0] // 100 + 1

    def prefill(q, kv, qsl, sl, bt):
        sched = prefill_schedule(qsl, 100, bq, slots)
        return mosaic_prefill.paged_prefill_mosaic(q, kv, qsl, sl, bt, sched, sm_scale=head_dim ** -0.5,
                                                   soft_cap=soft_cap)

    assert "mosaic_gpu" in jax.jit(prefill).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def test_supported_calls():
    q = jnp.zeros((64, 32, 128), jnp.bfloat16)
    kv = jnp.zeros((2, 4, 16, 8, 128), jnp.bfloat16)
    assert mosaic_prefill.supported(q, kv)
    assert not mosaic_prefill.supported(q, kv, sliding_window=128)
    assert mosaic_prefill.supported(q, kv, soft_cap=50.0)  # Gemma 2's global layers
    assert not mosaic_prefill.supported(q, kv.astype(jnp.float8_e4m3fn))
    assert not mosaic_prefill.supported(jnp.zeros((64, 32, 256), jnp.bfloat16), jnp.zeros((2, 4, 16, 8, 256)))
    assert not mosaic_prefill.supported(q, jnp.zeros((2, 4, 16, 2, 128), jnp.bfloat16))  # group 16: 4-row boxes
    assert mosaic_prefill.block_q(32, 8) == 32


def test_gather_slots_puts_rows_in_token_order():
    """Each prefill token takes its row of its schedule slot; decode tokens (q_len < min_q_len) and padding keep
    ``into``."""
    qsl = jnp.array([0, 40, 41, 46, 46], jnp.int32)  # q_lens 40, 1 (decode), 5, 0; 2 padding tokens
    sched = prefill_schedule(qsl, 2, 16, 6)  # q blocks of 16: sequence 0 -> 3 blocks, sequence 2 -> 1 block
    rows = jnp.arange(6 * 16, dtype=jnp.float32).reshape(6, 16, 1, 1) + 1000
    out = np.asarray(mosaic_prefill.gather_slots(rows, qsl, 2, -jnp.ones((48, 1, 1)))).reshape(48)
    want = -np.ones(48)
    for slot, (seq, blk) in enumerate(np.asarray(sched).T):
        if seq < 0:
            continue
        n = int(qsl[seq + 1] - qsl[seq])
        for t in range(16):
            if blk * 16 + t < n:
                want[int(qsl[seq]) + blk * 16 + t] = 1000 + slot * 16 + t
    np.testing.assert_array_equal(out, want)
    assert out[40] == -1 and (out[46:] == -1).all() and (out[:40] >= 1000).all() and (out[41:46] >= 1000).all()


def test_mosaic_prefill_needs_hopper(monkeypatch):
    """Forced (attention_backend="pallas_mosaic") on another GPU: an error naming the GPU, before any compile."""
    from jaxllm.ops.paged_attention import dispatch, pallas_attention
    monkeypatch.setattr(pallas_attention, "gpu_compute_capability", lambda: (8, 0))
    b = make_batch(np.random.default_rng(1), [40], [40], num_q_heads=8, num_kv_heads=8, head_dim=64, block_size=16)
    with pytest.raises(ValueError, match="needs a Hopper GPU.*sm_80"):
        dispatch.ragged_paged_attention(*map(jnp.asarray, b.args()), sm_scale=0.125, impl="pallas_mosaic")


def test_prefill_schedule_splits_by_length():
    """prefill_impl="mosaic": the Triton prefill schedule takes min_q_len <= q_len < max_q_len, the Mosaic one the
    rest, so every prefill sequence is in exactly one."""
    qsl = jnp.array([0, 40, 45, 46, 300], jnp.int32)  # q_lens 40, 5, 1, 254
    short = np.asarray(prefill_schedule(qsl, 2, 16, 24, max_q_len=100))
    long = np.asarray(prefill_schedule(qsl, 100, 16, 24))
    assert set(short[0][short[0] >= 0]) == {0, 1} and set(long[0][long[0] >= 0]) == {3}
    assert (short[0] >= 0).sum() == 3 + 1 and (long[0] >= 0).sum() == 16


@pytest.mark.parametrize("options", [{}, {"sliding_window": 2047}, {"soft_cap": 30.0}])
def test_triton_path_lowers_for_head_dim_96(options):
    """Phi-3-mini's D = 96 (not a power of two): the Triton kernels' padded tiles lower for the GPU (the Mosaic
    prefill does not cover D = 96, so calls stay on Triton)."""
    args = bf16_args([1000, 37, 1, 129], [1000, 500, 77, 129], (32, 32), 96, 16)
    assert not mosaic_prefill.supported(jax.ShapeDtypeStruct((8, 32, 96), jnp.bfloat16), args[1])
    lowered = jax.jit(lambda *a: ragged_paged_attention_pallas(*a, sm_scale=96 ** -0.5, prefill_impl="mosaic",
                                                               **options)).trace(*args).lower(
        lowering_platforms=("cuda",))
    text = lowered.as_text()
    assert "triton" in text.lower() and "mosaic_gpu" not in text
