"""The host tier of the KV cache: ``swap_space`` GiB of host memory in block-sized slots (host side, no jax).

A slot holds one device block's K/V (all layers). It is free, owned by a sequence preempted by swap (its
blocks, in table order, until it resumes), or, with the host prefix cache, a copy of an evicted device
prefix block, keyed by its hash and evicted least recently used first. The engine decides which blocks
move; each step's ``ScheduledBatch`` carries the copies (``swap_out``: device block -> slot, ``swap_in``:
slot -> device block) and the runner executes them before the step's forward, in this order: every
swap-out reads the device cache, then every swap-out writes its slot, then every swap-in reads its slot and
writes the device cache. Two rules keep that order exact: a slot read by a swap-in in a step is not written
again in the same step (slots released by a swap-in and prefix-cache slots read in the step are held until
the step's copies are taken), and copies that no step took yet stay queued for the next one.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

PREEMPTION_MODES = ("recompute", "swap")


@dataclasses.dataclass(frozen=True)
class PreemptionCost:
    """The cost rule of ``preemption_mode=None``: swap a preempted sequence out (and back in) when copying its
    blocks twice over the host link takes less time than recomputing its tokens, i.e. when
    ``2 * blocks * copy_seconds_per_block < tokens * seconds_per_token + tokens**2 * seconds_per_token_pair``
    (the dense FLOPs are linear in the tokens, causal attention quadratic). The runner fills the constants in:
    the copy time its own copy path took at start-up (a nominal bandwidth where it was not measured), and the
    recompute time from the model's size and a nominal FLOP rate (``jaxllm/runner/kv_swap.py``)."""

    copy_seconds_per_block: float
    seconds_per_token: float
    seconds_per_token_pair: float = 0.0

    def prefer_swap(self, num_blocks: int, num_tokens: int) -> bool:
        copy = 2 * num_blocks * self.copy_seconds_per_block
        return copy < num_tokens * (self.seconds_per_token + num_tokens * self.seconds_per_token_pair)


class HostTier:
    """Slots ``0 .. num_slots - 1`` of host memory; ``cache_prefixes``: keep evicted prefix blocks too."""

    def __init__(self, num_slots: int, cache_prefixes: bool) -> None:
        if num_slots < 1:
            raise ValueError(f"the host tier needs at least one slot, got {num_slots}")
        self.num_slots = num_slots
        self.cache_prefixes = cache_prefixes
        self.free: list[int] = list(range(num_slots - 1, -1, -1))  # popped from the end: slot 0 first
        self.cached: OrderedDict[int, int] = OrderedDict()  # prefix hash -> slot, least recently used first
        self.slot_hash: dict[int, int] = {}
        self._held: set[int] = set()  # cached slots read by this step's swap-ins: not evicted before it runs
        self._released: list[int] = []  # slots read by this step's swap-ins: free once the step takes them
        self._swap_out: list[tuple[int, int]] = []
        self._swap_in: list[tuple[int, int]] = []
        self.num_swapped_out = 0  # blocks copied device -> host (preemption and prefix offload)
        self.num_swapped_in = 0  # blocks copied host -> device
        self.prefix_hits = 0  # blocks found in the host prefix cache

    @property
    def num_free_slots(self) -> int:
        return len(self.free) + len(self._released)

    def _available(self) -> int:
        return len(self.free) + len(self.cached) - len(self._held)

    def _take_slot(self) -> int | None:
        if self.free:
            return self.free.pop()
        for h, slot in self.cached.items():  # least recently used first
            if slot not in self._held:
                del self.cached[h]
                del self.slot_hash[slot]
                return slot
        return None

    # ---- preemption by swap ----------------------------------------------------------------------------

    def swap_out(self, blocks: list[int]) -> list[int] | None:
        """Slots for a preempted sequence's device ``blocks`` (queued copies), or None when they do not fit."""
        if len(blocks) > self._available():
            return None
        slots = [self._take_slot() for _ in blocks]
        self._swap_out.extend(zip(blocks, slots))
        self.num_swapped_out += len(blocks)
        return slots

    def swap_in(self, slots: list[int], blocks: list[int]) -> None:
        """Queue the copies of a resuming sequence's ``slots`` into device ``blocks``; the slots are freed."""
        self._swap_in.extend(zip(slots, blocks))
        self._released.extend(slots)
        self.num_swapped_in += len(slots)

    def release(self, slots: list[int]) -> None:
        """A swapped-out sequence finished or was aborted: its slots are free."""
        self.free.extend(slots)

    # ---- host prefix cache -----------------------------------------------------------------------------

    def offload(self, block_hash: int, block: int) -> None:
        """A device prefix block is being evicted: keep a copy (unless one is kept already or no slot is left)."""
        if not self.cache_prefixes:
            return
        if block_hash in self.cached:
            self.cached.move_to_end(block_hash)
            return
        slot = self._take_slot()
        if slot is None:
            return
        self._swap_out.append((block, slot))
        self.cached[block_hash] = slot
        self.slot_hash[slot] = block_hash
        self.num_swapped_out += 1

    def lookup(self, block_hash: int) -> int | None:
        return self.cached.get(block_hash) if self.cache_prefixes else None

    def hold(self, slots: list[int]) -> None:
        """Keep cached ``slots`` (about to be loaded in this step) from being evicted until the step is taken."""
        self._held.update(slots)

    def load(self, slot: int, block: int) -> None:
        """A prefix hit in the host cache: copy ``slot`` into device ``block`` (the copy stays cached)."""
        self.cached.move_to_end(self.slot_hash[slot])
        self._held.add(slot)
        self._swap_in.append((slot, block))
        self.num_swapped_in += 1
        self.prefix_hits += 1

    def clear_cache(self) -> None:
        for slot in self.cached.values():
            (self._released if slot in self._held else self.free).append(slot)
        self.cached.clear()
        self.slot_hash.clear()

    # ---- per step --------------------------------------------------------------------------------------

    def take_swaps(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The copies queued since the last call, for the step being scheduled: (swap_out, swap_in)."""
        out, into = self._swap_out, self._swap_in
        self._swap_out, self._swap_in = [], []
        self.free.extend(self._released)
        self._released = []
        self._held.clear()
        return out, into
