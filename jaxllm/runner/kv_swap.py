"""The runner's side of the KV cache's host tier: ``swap_space`` GiB of host memory in block-sized slots, and the
two copy programs that move blocks between it and the device cache (the engine decides which; see
``jaxllm/engine/host_tier.py`` for the order the copies of one step are made in).

The slots live in numpy arrays, one per layer, shaped like the cache with slots for blocks:
``[2 (K, V), num_slots, block_size, kv_heads, head_dim]``. They are allocated with ``np.zeros`` when the
first block is swapped out, so the operating system commits the pages only as slots are written. numpy rather
than JAX's ``pinned_host`` memory kind: a slot is written and read a few blocks at a time at arbitrary
indices, which numpy does in place, whereas a JAX host array would be rewritten by each update (or need a
donated host-side scatter that not every backend compiles); the device -> host copy itself is a device
transfer either way (``copy_to_host_async``). ``scripts/host_bandwidth.py`` measures both paths.

Swap-out: one jitted gather of the ``n`` blocks from every layer (``n`` padded to a power of two, and long
lists copied in chunks of 256, so at most 7 programs per direction are compiled, on first use), whose transfer to the host starts at once (``copy_to_host_async``); the results are
written into the slots when the step's output is fetched (the gather ran before the step, so it is done by
then) or before a swap-in needs them. Swap-in: the slots' data goes to the device in one transfer and one
jitted, donated scatter writes it into the cache before the step's forward. Neither blocks the host per block.
"""

from __future__ import annotations

import jax
import numpy as np

# Nominal constants of the preemption cost rule (``jaxllm.engine.host_tier.PreemptionCost``): the host link's
# bandwidth (PCIe Gen5 x16 achieves ~50 GB/s one way; half of it is what copies of scattered blocks see)
# and the dense FLOP rate a recompute (a prefill) reaches.
HOST_BANDWIDTH = {"gpu": 25e9, "cpu": 10e9}  # bytes / s
DEVICE_FLOPS = {"gpu": 400e12, "cpu": 50e9}  # FLOP / s
_MIN_COPY = 4  # smallest padded copy
_MAX_COPY = 256  # largest: longer lists are copied in chunks, so at most 7 sizes per direction are compiled


def _gather(caches, idx):
    """[2, num_blocks, ...] per layer -> [2, len(idx), ...] per layer."""
    return [c[:, idx] for c in caches]


def _scatter(caches, idx, values):
    """Write values[l][:, j] into caches[l][:, idx[j]] (padding repeats the first pair: the same value)."""
    return [c.at[:, idx].set(v) for c, v in zip(caches, values)]


def _padded(ids: list[int]) -> np.ndarray:
    n = max(_MIN_COPY, 1 << (len(ids) - 1).bit_length())
    out = np.full(n, ids[0], np.int32)
    out[: len(ids)] = ids
    return out


class HostKVPool:
    """``num_slots`` host slots for blocks of caches shaped like ``cache_shapes`` (one ShapeDtypeStruct per
    layer); ``sharding``: the device cache's, for the swapped-in blocks."""

    def __init__(self, num_slots: int, cache_shapes, sharding) -> None:
        self.num_slots = num_slots
        self._shapes = [(s.shape[0], num_slots, *s.shape[2:]) for s in cache_shapes]
        self._dtypes = [s.dtype for s in cache_shapes]
        self._sharding = sharding
        self.pools: list[np.ndarray] | None = None
        self._pending: list[tuple[np.ndarray, int, list]] = []  # (slots, n, gathered device arrays)
        # per-pool wrappers: jax.jit of one function shares its cache, and num_compilations counts this pool's
        self._gather = jax.jit(lambda caches, idx: _gather(caches, idx))
        self._scatter = jax.jit(lambda caches, idx, values: _scatter(caches, idx, values), donate_argnums=0)

    @staticmethod
    def slot_bytes(cache_shapes) -> int:
        """Host bytes of one slot: a whole block of every layer (all heads, gathered from every device)."""
        return sum(int(np.prod(s.shape)) // s.shape[1] * np.dtype(s.dtype).itemsize for s in cache_shapes)

    @property
    def num_compilations(self) -> int:
        """Copy programs compiled so far (one per padded size and direction, on first use)."""
        return self._gather._cache_size() + self._scatter._cache_size()

    @property
    def nbytes(self) -> int:
        return 0 if self.pools is None else sum(p.nbytes for p in self.pools)

    def apply(self, caches: list, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> list:
        """Issue one step's copies (swap-outs first); returns the cache arrays (the swap-in donates them)."""
        last = {slot: block for block, slot in swap_out}  # a slot written twice in a step keeps the later
        out = [(block, slot) for slot, block in last.items()]
        for c in range(0, len(out), _MAX_COPY):
            blocks, slots = zip(*out[c:c + _MAX_COPY])
            gathered = self._gather(caches, _padded(list(blocks)))
            for a in gathered:
                a.copy_to_host_async()
            self._pending.append((np.asarray(slots, np.int64), len(slots), gathered))
        if swap_in:
            self.flush()
            self._ensure_pools()
        for c in range(0, len(swap_in), _MAX_COPY):
            slots, blocks = zip(*swap_in[c:c + _MAX_COPY])
            idx = _padded(list(slots))
            values = jax.device_put([p[:, idx] for p in self.pools], self._sharding)
            caches = self._scatter(caches, _padded(list(blocks)), values)
        return caches

    def flush(self) -> None:
        """Write the swapped-out blocks into their slots (waits for the gathers still in flight)."""
        if not self._pending:
            return
        self._ensure_pools()
        for slots, n, gathered in self._pending:  # in order: a slot written in two steps keeps the later
            for pool, a in zip(self.pools, gathered):
                pool[:, slots] = np.asarray(a)[:, :n]
        self._pending = []

    def _ensure_pools(self) -> None:
        if self.pools is None:
            self.pools = [np.zeros(shape, dtype) for shape, dtype in zip(self._shapes, self._dtypes)]


def make_host_pool(swap_space_gib: float, cache_shapes, sharding) -> HostKVPool | None:
    """The host tier of ``swap_space_gib`` GiB, or None when it holds no slot."""
    num_slots = int(swap_space_gib * 2**30) // HostKVPool.slot_bytes(cache_shapes)
    return HostKVPool(num_slots, cache_shapes, sharding) if num_slots > 0 else None


def preemption_cost_terms(params, cfg, slot_bytes: int, platform: str) -> dict[str, float]:
    """The constants of ``PreemptionCost`` for this model: a slot's copy time over the host link, and the
    recompute time per token (2 FLOPs per parameter) and per pair of tokens (causal attention: QK^T and PV,
    2 FLOPs each per query dim and layer, over half of the L^2 pairs)."""
    kind = "cpu" if platform == "cpu" else "gpu"
    flops = DEVICE_FLOPS[kind]
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    return {"copy_seconds_per_block": slot_bytes / HOST_BANDWIDTH[kind],
            "seconds_per_token": 2 * num_params / flops,
            "seconds_per_token_pair": 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim / flops}
