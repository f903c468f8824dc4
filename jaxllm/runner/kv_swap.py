"""The runner's side of the KV cache's host tier: ``swap_space`` GiB of pinned host memory in block-sized slots,
and the two copy programs that move blocks between it and the device cache (the engine decides which; see
``jaxllm/engine/host_tier.py`` for the order the copies of one step are made in).

A slot is one JAX array in the ``pinned_host`` memory kind, shaped ``[L (layers), 2 (K, V), block_size,
kv_heads, head_dim]`` and sharded over KV heads like the cache (each device's shard goes to host memory from
that device). A slot array exists only once a block was swapped into it, so host memory is at most
``num_slots`` slots, and it is freed with the pool. One array per slot rather than one per step's transfer:
slots are freed, evicted and rewritten one at a time, and a JAX host array cannot be updated in part without
host-side compute, so an array shared by several slots would outlive most of them.

Swap-out of a step's ``n`` blocks: one jitted gather reads the blocks from every layer into ``n`` slot-shaped
device arrays, and one ``jax.device_put`` of that list to the ``pinned_host`` sharding starts their direct
(DMA) transfers to pinned memory; the resulting host arrays are kept as the slots. Nothing waits for them:
a later read of a slot is ordered after its transfer by the runtime, not by the host. Swap-in: one
``device_put`` of the slots' arrays back to device memory, then one jitted scatter, donating the cache, writes
them into their blocks before the step's forward; the forward is ordered after it on the device. Neither
direction blocks the host, loops over blocks in Python beyond listing them, or goes through numpy.

``n`` is padded up to one of ``COPY_SIZES`` (padding repeats the first block: the same value, and only the
real blocks are transferred); longer lists go in chunks of the largest size. The ``2 * len(COPY_SIZES)``
programs are compiled at start-up on a GPU (``warm_up``, which also measures the copy time per block that the
preemption cost rule uses); with ``enforce_eager``, and on the CPU backend (where host and device memory are
the same RAM and start-up time matters more than a first swap's compile), on first use.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# Nominal constants of the preemption cost rule (``jaxllm.engine.host_tier.PreemptionCost``) where the copy
# time was not measured (``enforce_eager``, the CPU backend): the host link's bandwidth (PCIe Gen5 x16 reaches ~50 GB/s one way
# into pinned memory; half of it is what a mix of small copies sees) and the dense FLOP rate of a recompute.
HOST_BANDWIDTH = {"gpu": 25e9, "cpu": 10e9}  # bytes / s
DEVICE_FLOPS = {"gpu": 400e12, "cpu": 50e9}  # FLOP / s
# Padded sizes of one copy (compile time grows with the size: one output or input array per block); a
# 32-block chunk of Llama-3.1-8B is a 64 MiB transfer and as many device temporaries in flight.
COPY_SIZES = (2, 8, 32)


def _gather(caches, idx):
    """L caches [2, NB, bs, kh, hd], idx [n] -> n blocks [L, 2, bs, kh, hd] (one array per slot)."""
    blocks = jnp.stack([c[:, idx] for c in caches])  # [L, 2, n, bs, kh, hd]
    return [blocks[:, :, j] for j in range(idx.shape[0])]


def _scatter(caches, idx, values):
    """Write values[j] [L, 2, bs, kh, hd] into block idx[j] of every layer (padding repeats the first pair)."""
    blocks = jnp.stack(values, axis=2)  # [L, 2, n, bs, kh, hd]
    return [c.at[:, idx].set(blocks[layer]) for layer, c in enumerate(caches)]


def _copy_size(n: int) -> int:
    return next(s for s in COPY_SIZES if s >= n)


def _padded(ids, size: int) -> np.ndarray:
    out = np.full(size, ids[0], np.int32)
    out[: len(ids)] = ids
    return out


def _chunks(pairs: list) -> list[tuple[tuple, tuple]]:
    """[(a, b)] -> [((a...), (b...))] of at most ``COPY_SIZES[-1]`` pairs each."""
    step = COPY_SIZES[-1]
    return [tuple(zip(*pairs[c:c + step])) for c in range(0, len(pairs), step)]


def slot_sharding(cache_sharding):
    """A slot's device sharding: the cache's ``[2, NB, bs, kh, hd]`` spec without the block axis, after L."""
    if not isinstance(cache_sharding, NamedSharding):
        return cache_sharding
    spec = tuple(cache_sharding.spec) + (None,) * (5 - len(cache_sharding.spec))
    return NamedSharding(cache_sharding.mesh, PartitionSpec(None, spec[0], *spec[2:]))


class HostKVPool:
    """``num_slots`` pinned host slots for blocks of caches shaped like ``cache_shapes`` (one ShapeDtypeStruct
    or array per layer); ``sharding``: the device cache's."""

    def __init__(self, num_slots: int, cache_shapes, sharding) -> None:
        self.num_slots = num_slots
        first = cache_shapes[0]
        self.slot_shape = (len(cache_shapes), first.shape[0], *first.shape[2:])
        self.slot_dtype = first.dtype
        self._device = slot_sharding(sharding)
        self._host = None if self._device is None else self._device.with_memory_kind("pinned_host")
        self.slots: list[jax.Array | None] = [None] * num_slots
        self._programs: dict[tuple[str, int], object] = {}
        self.copy_seconds_per_block: float | None = None  # measured by warm_up (one direction)
        self.num_transfers = 0  # device_put calls issued (each moves up to COPY_SIZES[-1] blocks)

    @staticmethod
    def slot_bytes(cache_shapes) -> int:
        """Host bytes of one slot: a whole block of every layer (all heads, from every device)."""
        return sum(int(np.prod(s.shape)) // s.shape[1] * np.dtype(s.dtype).itemsize for s in cache_shapes)

    @property
    def num_compilations(self) -> int:
        """Copy programs compiled so far (one per padded size and direction)."""
        return len(self._programs)

    @property
    def nbytes(self) -> int:
        """Host bytes held by the slots written so far."""
        return sum(a.nbytes for a in self.slots if a is not None)

    def apply(self, caches: list, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> list:
        """Issue one step's copies (swap-outs first) without waiting for any; returns the cache arrays (a
        swap-in donates them)."""
        last = {slot: block for block, slot in swap_out}  # a slot written twice in a step keeps the later
        for slots, blocks in _chunks(list(last.items())):
            size = _copy_size(len(blocks))
            gathered = self._program("out", caches, size)(caches, _padded(blocks, size))
            hosted = jax.device_put(gathered[: len(slots)], [self._host] * len(slots))
            self.num_transfers += 1
            for slot, array in zip(slots, hosted):
                self.slots[slot] = array
        for slots, blocks in _chunks(swap_in):
            size = _copy_size(len(blocks))
            values = jax.device_put([self._slot(s) for s in slots], [self._device] * len(slots))
            self.num_transfers += 1
            values = list(values) + [values[0]] * (size - len(values))
            caches = self._program("in", caches, size)(caches, _padded(blocks, size), values)
        return caches

    def _slot(self, slot: int) -> jax.Array:
        array = self.slots[slot]
        if array is None:
            raise RuntimeError(f"host slot {slot} is read before any block was swapped out to it")
        return array

    # ---- programs ----------------------------------------------------------------------------------------

    def _program(self, kind: str, caches, size: int):
        key = (kind, size)
        if key not in self._programs:
            self._programs[key] = self._compile(kind, caches, size)
        return self._programs[key]

    def _compile(self, kind: str, caches, size: int):
        """The gather (``out``) or the donated scatter (``in``) of ``size`` blocks, compiled for ``caches``."""
        shapes = [jax.ShapeDtypeStruct(c.shape, c.dtype, sharding=c.sharding) for c in caches]
        idx = jax.ShapeDtypeStruct((size,), jnp.int32)
        if kind == "out":
            return jax.jit(_gather, out_shardings=[self._device] * size).lower(shapes, idx).compile()
        values = [jax.ShapeDtypeStruct(self.slot_shape, self.slot_dtype, sharding=self._device)] * size
        program = jax.jit(_scatter, donate_argnums=0, out_shardings=[c.sharding for c in caches])
        return program.lower(shapes, idx, values).compile()

    def warm_up(self, caches: list) -> list:
        """Compile every copy program (in parallel threads), run each once on the (fresh) cache, blocks copied
        out and back to where they were, and record the round trip's time per block and direction at the largest
        size: the copy time the preemption cost rule uses. Returns the cache arrays (donated on the way)."""
        keys = [(kind, size) for size in COPY_SIZES for kind in ("out", "in")]
        with ThreadPoolExecutor(min(len(keys), 4)) as pool:
            compiled = list(pool.map(lambda key: self._compile(key[0], caches, key[1]), keys))
        self._programs.update(zip(keys, compiled))
        num_blocks = caches[0].shape[1]
        for size in (*COPY_SIZES, COPY_SIZES[-1]):  # the last one again, timed without first-run costs
            idx = np.arange(size, dtype=np.int32) % num_blocks
            t0 = time.perf_counter()
            hosted = jax.device_put(self._programs["out", size](caches, idx), [self._host] * size)
            values = jax.device_put(jax.block_until_ready(hosted), [self._device] * size)
            caches = jax.block_until_ready(self._programs["in", size](caches, idx, values))
            self.copy_seconds_per_block = (time.perf_counter() - t0) / (2 * size)
        return caches


def make_host_pool(swap_space_gib: float, cache_shapes, sharding) -> HostKVPool | None:
    """The host tier of ``swap_space_gib`` GiB, or None when it holds no slot."""
    num_slots = int(swap_space_gib * 2**30) // HostKVPool.slot_bytes(cache_shapes)
    return HostKVPool(num_slots, cache_shapes, sharding) if num_slots > 0 else None


def preemption_cost_terms(params, cfg, pool: HostKVPool, cache_shapes, platform: str) -> dict[str, float]:
    """The constants of ``PreemptionCost`` for this model: a slot's copy time (measured at start-up, else a
    slot's bytes over the nominal host bandwidth), and the recompute time per token (2 FLOPs per parameter)
    and per pair of tokens (causal attention: QK^T and PV, 2 FLOPs each per query dim and layer, over half of
    the L^2 pairs)."""
    kind = "cpu" if platform == "cpu" else "gpu"
    flops = DEVICE_FLOPS[kind]
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    copy = pool.copy_seconds_per_block
    if copy is None:
        copy = pool.slot_bytes(cache_shapes) / HOST_BANDWIDTH[kind]
    return {"copy_seconds_per_block": copy,
            "seconds_per_token": 2 * num_params / flops,
            "seconds_per_token_pair": 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim / flops}
