"""The runner's host-tier copies (jaxllm.runner.kv_swap.HostKVPool) on the CPU: blocks round-trip exactly,
a slot written twice keeps the later block, and a swap-in in the same step reads what the swap-outs wrote."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxllm.runner.kv_swap import HostKVPool, make_host_pool

SHAPE = (2, 10, 4, 2, 8)  # [K/V, blocks, block_size, kv_heads, head_dim]


def caches_and_pool(num_slots=6, layers=2, dtype=jnp.bfloat16):
    rng = np.random.default_rng(0)
    dev = jax.devices()[0]  # committed, as the runner allocates the cache
    caches = [jax.device_put(jnp.asarray(rng.standard_normal(SHAPE), dtype), dev) for _ in range(layers)]
    pool = HostKVPool(num_slots, [jax.ShapeDtypeStruct(SHAPE, dtype)] * layers,
                      SingleDeviceSharding(jax.devices()[0]))
    return caches, pool


def test_blocks_round_trip_through_the_host():
    caches, pool = caches_and_pool()
    before = [np.asarray(c) for c in caches]
    caches = pool.apply(caches, [(3, 0), (7, 1), (1, 2)], [])
    assert pool.pools is None  # written when flushed (the step's fetch)
    pool.flush()
    caches = pool.apply(caches, [], [(1, 0), (0, 9), (2, 5)])  # 7 -> 0, 3 -> 9, 1 -> 5
    for b, c in zip(before, caches):
        got = np.asarray(c)
        np.testing.assert_array_equal(got[:, 0], b[:, 7])
        np.testing.assert_array_equal(got[:, 9], b[:, 3])
        np.testing.assert_array_equal(got[:, 5], b[:, 1])
        np.testing.assert_array_equal(got[:, 2], b[:, 2])  # untouched
    assert pool.nbytes == 6 * HostKVPool.slot_bytes(caches)  # 6 slots of every layer
    assert pool.num_compilations == 2


def test_same_step_order_and_repeated_slots():
    caches, pool = caches_and_pool()
    before = [np.asarray(c) for c in caches]
    # slot 4 is written twice (the later block wins), then read back in the same step
    caches = pool.apply(caches, [(2, 4), (6, 4)], [(4, 8)])
    for b, c in zip(before, caches):
        np.testing.assert_array_equal(np.asarray(c)[:, 8], b[:, 6])
    assert not pool._pending


def test_long_copies_go_in_chunks(monkeypatch):
    monkeypatch.setattr("jaxllm.runner.kv_swap._MAX_COPY", 4)
    caches, pool = caches_and_pool(num_slots=10)
    before = [np.asarray(c) for c in caches]
    order = [9, 0, 5, 1, 8, 2, 7, 3, 6, 4]
    caches = pool.apply(caches, list(zip(range(10), range(10))), [])
    pool.flush()
    caches = pool.apply(caches, [], list(zip(range(10), order)))  # block i -> block order[i]
    for b, c in zip(before, caches):
        np.testing.assert_array_equal(np.asarray(c)[:, order], b)
    assert pool.num_compilations == 2  # chunks of 4, 4 and 2 (padded to 4): one size per direction


def test_pool_size_follows_swap_space():
    shapes = [jax.ShapeDtypeStruct(SHAPE, jnp.float32)] * 3
    slot = HostKVPool.slot_bytes(shapes)
    assert slot == 3 * 2 * 4 * 2 * 8 * 4
    assert make_host_pool(10 * slot / 2**30, shapes, None).num_slots == 10
    assert make_host_pool(0.5 * slot / 2**30, shapes, None) is None
