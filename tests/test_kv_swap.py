"""The runner's host-tier copies (jaxllm.runner.kv_swap.HostKVPool) on the CPU: blocks round-trip exactly
through pinned-host slots, a slot written twice keeps the later block, a swap-in in the same step reads what
the swap-outs wrote, a step's copies are a bounded number of transfers, and nothing waits for them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxllm.runner import kv_swap
from jaxllm.runner.kv_swap import HostKVPool, make_host_pool

SHAPE = (2, 10, 4, 2, 8)  # [K/V, blocks, block_size, kv_heads, head_dim]


def caches_and_pool(num_slots=6, layers=2, dtype=jnp.bfloat16, shape=SHAPE):
    rng = np.random.default_rng(0)
    dev = jax.devices()[0]  # committed, as the runner allocates the cache
    caches = [jax.device_put(jnp.asarray(rng.standard_normal(shape), dtype), dev) for _ in range(layers)]
    pool = HostKVPool(num_slots, [jax.ShapeDtypeStruct(shape, dtype)] * layers, SingleDeviceSharding(dev))
    return caches, pool


def test_blocks_round_trip_through_pinned_host_slots():
    caches, pool = caches_and_pool()
    before = [np.asarray(c) for c in caches]
    caches = pool.apply(caches, [(3, 0), (7, 1), (1, 2)], [])
    assert all(pool.slots[s].sharding.memory_kind == "pinned_host" for s in range(3))
    assert pool.slots[3] is None
    caches = pool.apply(caches, [], [(1, 0), (0, 9), (2, 5)])  # 7 -> 0, 3 -> 9, 1 -> 5
    for b, c in zip(before, caches):
        got = np.asarray(c)
        np.testing.assert_array_equal(got[:, 0], b[:, 7])
        np.testing.assert_array_equal(got[:, 9], b[:, 3])
        np.testing.assert_array_equal(got[:, 5], b[:, 1])
        np.testing.assert_array_equal(got[:, 2], b[:, 2])  # untouched
    assert pool.nbytes == 3 * HostKVPool.slot_bytes(caches)  # only the slots written hold memory
    assert pool.num_compilations == 2 and pool.num_transfers == 2


def test_same_step_order_and_repeated_slots():
    caches, pool = caches_and_pool()
    before = [np.asarray(c) for c in caches]
    # slot 4 is written twice (the later block wins), then read back in the same step
    caches = pool.apply(caches, [(2, 4), (6, 4)], [(4, 8)])
    for b, c in zip(before, caches):
        np.testing.assert_array_equal(np.asarray(c)[:, 8], b[:, 6])


def test_a_step_is_one_transfer_per_chunk_and_nothing_blocks(monkeypatch):
    """Counted calls: one device_put per direction per chunk of COPY_SIZES[-1] blocks, whatever the number of
    blocks or layers; no block_until_ready, device_get or numpy conversion on the way."""
    monkeypatch.setattr(kv_swap, "COPY_SIZES", (2, 4))  # small programs: a fast test
    n = 7  # two chunks: 4 blocks and 3 (padded to 4)
    caches, pool = caches_and_pool(num_slots=n, layers=3, shape=(2, n + 2, 4, 2, 8))
    before = [np.asarray(c) for c in caches]
    calls = {"device_put": 0, "wait": 0}
    real_put = jax.device_put

    def counting_put(*args, **kwargs):
        calls["device_put"] += 1
        return real_put(*args, **kwargs)

    def forbidden(*args, **kwargs):
        calls["wait"] += 1
        raise AssertionError("the host waited on a copy")

    monkeypatch.setattr(jax, "device_put", counting_put)
    monkeypatch.setattr(jax, "block_until_ready", forbidden)
    monkeypatch.setattr(jax, "device_get", forbidden)
    monkeypatch.setattr(kv_swap, "np", _NoAsarray(np))
    blocks = list(range(n))
    caches = pool.apply(caches, list(zip(blocks, range(n))), [])
    assert calls["device_put"] == 2
    order = blocks[::-1]
    caches = pool.apply(caches, [], list(zip(range(n), order)))  # block i -> block n - 1 - i
    assert calls == {"device_put": 4, "wait": 0} and pool.num_transfers == 4
    monkeypatch.undo()
    for b, c in zip(before, caches):
        np.testing.assert_array_equal(np.asarray(c)[:, order], b[:, :n])
    assert pool.num_compilations == 2  # size 4, each direction


class _NoAsarray:
    """numpy for kv_swap with the host round trips (asarray, array) forbidden."""

    def __init__(self, module):
        self._np = module

    def __getattr__(self, name):
        if name in ("asarray", "array"):
            raise AssertionError(f"kv_swap called np.{name}: a numpy round trip")
        return getattr(self._np, name)


def test_warm_up_compiles_every_size_and_measures_the_copy(monkeypatch):
    monkeypatch.setattr(kv_swap, "COPY_SIZES", (2, 4))  # small programs: a fast test
    caches, pool = caches_and_pool()
    before = [np.asarray(c) for c in caches]
    caches = pool.warm_up(caches)
    assert pool.num_compilations == 4
    assert pool.copy_seconds_per_block is not None and pool.copy_seconds_per_block > 0
    for b, c in zip(before, caches):  # blocks went out and back to where they were
        np.testing.assert_array_equal(np.asarray(c), b)
    caches = pool.apply(caches, [(5, 0)], [(0, 1)])
    assert pool.num_compilations == 4  # nothing more compiled
    np.testing.assert_array_equal(np.asarray(caches[0])[:, 1], before[0][:, 5])


def test_pool_size_follows_swap_space():
    shapes = [jax.ShapeDtypeStruct(SHAPE, jnp.float32)] * 3
    slot = HostKVPool.slot_bytes(shapes)
    assert slot == 3 * 2 * 4 * 2 * 8 * 4
    assert make_host_pool(10 * slot / 2**30, shapes, None).num_slots == 10
    assert make_host_pool(0.5 * slot / 2**30, shapes, None) is None


def test_cost_rule_uses_the_measured_copy_time():
    """preemption_cost_terms: the copy time warm_up measured, else a slot's bytes over the nominal bandwidth."""
    from types import SimpleNamespace

    shapes = [jax.ShapeDtypeStruct(SHAPE, jnp.float32)] * 3
    pool = make_host_pool(10 * HostKVPool.slot_bytes(shapes) / 2**30, shapes, None)
    cfg = SimpleNamespace(num_layers=3, num_heads=4, head_dim=8)
    params = [np.zeros((10, 10))]
    nominal = kv_swap.preemption_cost_terms(params, cfg, pool, shapes, "gpu")
    assert nominal["copy_seconds_per_block"] == HostKVPool.slot_bytes(shapes) / kv_swap.HOST_BANDWIDTH["gpu"]
    assert nominal["seconds_per_token"] == 2 * 100 / kv_swap.DEVICE_FLOPS["gpu"]
    pool.copy_seconds_per_block = 1.5e-3
    assert kv_swap.preemption_cost_terms(params, cfg, pool, shapes, "gpu")["copy_seconds_per_block"] == 1.5e-3
