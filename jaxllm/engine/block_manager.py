"""Paged KV-cache bookkeeping: a fixed pool of blocks, ref counts, and the prefix cache (host side, no jax).

A block holds the K/V of ``block_size`` consecutive positions of one or more sequences (shared blocks have
ref_count > 1). Free blocks wait in an LRU queue; with prefix caching a full block keeps its hash after it
is freed, so a later sequence with the same prefix can take it back until it is evicted (reused for other
tokens). The hash of block i chains the previous block's hash with block i's token ids, so equal hashes
mean equal prefixes (vLLM's scheme, with Python's 64-bit tuple hash). Under a rope whose rotation depends on
the sequence's length (longrope, dynamic NTK) the first block's hash also carries the prompt's rope regime
(``RopeConfig.length_regime``), so a block is only reused by a sequence that would have rotated its keys alike.

Hashes are registered when a block is *allocated* for the tokens that fill it, before the step that
computes them runs (as vLLM v1 does), except for a block holding a token not sampled yet (a placeholder of
asynchronous scheduling, a negative id): that one is registered when the sequence is next scheduled. A sequence admitted later in the same step may then reuse those
blocks: this is exact because the runner writes the K/V of every scheduled token of a layer to the cache
before that layer's attention reads the cache.

With a host tier (``host``, see ``host_tier.py``), a preempted sequence's blocks can be swapped out to host
slots (``swap_out``) and back into fresh device blocks (``swap_in``), and, with the host prefix cache, an
evicted prefix block is copied to the host and found there by ``get_computed_blocks``: a host hit is
returned as ``~slot`` (a negative id) and ``allocate`` copies it into a fresh device block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .host_tier import HostTier
from .sequence import Sequence

_HASH_SEED = 0x5EED_CAFE  # "previous block hash" of block 0


def _chain_start(seq: Sequence, rope_regime: Callable[[int], int] | None) -> int:
    """The "previous block hash" of ``seq``'s first block. An adapter's sequence starts from the adapter's id
    (equal tokens under different adapters have different K/V); a prompt's ``cache_salt`` is hashed in after
    it (vLLM mixes the salt into the first block's hash), so requests with different salts never share a
    block and equal salts do. The salt's tuple has three items and the adapter's two: no salt hashes as an
    adapter. A nonzero rope regime of the prompt's length is hashed in last (regime 0, and a model whose rope
    does not depend on the length, hash as before: no hit is lost)."""
    prev = hash((_HASH_SEED, seq.lora_int_id)) if seq.lora_int_id else _HASH_SEED
    if seq.cache_salt:
        prev = hash((prev, "cache_salt", seq.cache_salt))
    regime = rope_regime(seq.num_prompt_tokens) if rope_regime is not None else 0
    return hash((prev, "rope_regime", regime)) if regime else prev


class BlockManager:
    """``rope_regime``: the model's rope regime of a prompt length (``RopeConfig.length_regime``), hashed into
    each sequence's first block; None for a rope that does not depend on the length."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool,
                 host: HostTier | None = None, rope_regime: Callable[[int], int] | None = None) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks} and {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks  # set iff cached_blocks[hash] is this block
        self.cached_blocks: dict[int, int] = {}  # hash -> block id
        # Free blocks, eviction order first (an OrderedDict is an O(1) LRU queue with removal by key).
        self.free_queue: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._pending: list[int] = []  # blocks registered since the last take_pending_hashes()
        self.host = host
        self.rope_regime = rope_regime

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by some sequence."""
        return 1.0 - len(self.free_queue) / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix cache ----------------------------------------------------------------------------------

    def _hash_blocks(self, seq: Sequence, num_full_blocks: int) -> list[int]:
        """Extend ``seq.block_hashes`` to cover its first ``num_full_blocks`` (full) blocks; O(new tokens)."""
        hashes = seq.block_hashes
        bs, toks = self.block_size, seq.token_ids
        prev = hashes[-1] if hashes else _chain_start(seq, self.rope_regime)
        embeds = seq.prompt_embeds
        for i in range(len(hashes), num_full_blocks):
            key = tuple(toks[i * bs : (i + 1) * bs])
            if embeds is not None and i * bs < len(embeds):  # the placeholder ids: key by the embeddings' bytes
                key = (key, hash(embeds[i * bs : (i + 1) * bs].tobytes()))
            prev = hash((prev, key))
            hashes.append(prev)
        return hashes

    def get_computed_blocks(self, seq: Sequence) -> list[int]:
        """Cached blocks holding the longest prefix of ``seq.token_ids`` (no side effects). At least one
        token is always left to compute, so the step produces logits to sample from."""
        if not (self.enable_prefix_caching and seq.read_prefix_cache):
            return []
        max_blocks = (len(seq.token_ids) - 1) // self.block_size
        hashes = self._hash_blocks(seq, max_blocks)
        hits = []
        host = self.host
        for i in range(max_blocks):
            b = self.cached_blocks.get(hashes[i])
            if b is None and host is not None:
                slot = host.lookup(hashes[i])
                b = None if slot is None else ~slot
            if b is None:
                break
            hits.append(b)
        return hits

    # ---- allocation ------------------------------------------------------------------------------------

    def can_allocate(self, seq: Sequence, num_new_tokens: int, computed_blocks: list[int] = ()) -> bool:
        """Whether ``allocate(seq, num_new_tokens, computed_blocks)`` would find enough free blocks."""
        if computed_blocks:
            total = len(computed_blocks) * self.block_size + num_new_tokens
            # Reusing a free cached block takes it out of the free queue too; a host hit needs a fresh block.
            have = sum(1 for b in computed_blocks if b >= 0)
            have_free = sum(1 for b in computed_blocks if b >= 0 and self.ref_counts[b] == 0)
        else:
            total = seq.num_computed_tokens + num_new_tokens
            have, have_free = len(seq.block_table), 0
        return self.blocks_needed(total) - have + have_free <= len(self.free_queue)

    def allocate(self, seq: Sequence, num_new_tokens: int, computed_blocks: list[int] = ()) -> None:
        """Make ``seq.block_table`` cover positions ``[0, num_computed_tokens + num_new_tokens)``.

        ``computed_blocks`` (from ``get_computed_blocks``, for a sequence holding no blocks) are taken as
        its first blocks and set ``num_computed_tokens``. Call ``can_allocate`` first."""
        table = seq.block_table
        if computed_blocks:
            assert not table, "computed blocks are only taken by a sequence that holds no blocks"
            for b in computed_blocks:
                if b >= 0:
                    if self.ref_counts[b] == 0:
                        del self.free_queue[b]
                    self.ref_counts[b] += 1
            table.extend(computed_blocks)
            if self.host is not None:  # the blocks taken below may evict to the host: keep these slots
                self.host.hold([~b for b in computed_blocks if b < 0])
            for i, b in enumerate(table):
                if b < 0:
                    table[i] = self._load_from_host(~b, seq.block_hashes[i])
            seq.num_computed_tokens = len(computed_blocks) * self.block_size
            seq.num_registered_blocks = len(computed_blocks)
        total = seq.num_computed_tokens + num_new_tokens
        for _ in range(self.blocks_needed(total) - len(table)):
            table.append(self._take_free_block())
        if self.enable_prefix_caching:
            self._register_full_blocks(seq, total // self.block_size)

    def allocate_slots(self, seq: Sequence, num_new_tokens: int, computed_blocks: list[int] = ()) -> bool:
        """``allocate`` if the blocks are available (returns True), else change nothing and return False.
        The scheduler's hot path: a decode that fits in the blocks it holds costs a few comparisons."""
        if not computed_blocks:
            total = seq.num_computed_tokens + num_new_tokens
            bs = self.block_size
            if total <= len(seq.block_table) * bs:  # no new block needed
                if self.enable_prefix_caching and total // bs > seq.num_registered_blocks:
                    self._register_full_blocks(seq, total // bs)
                return True
        if not self.can_allocate(seq, num_new_tokens, computed_blocks):
            return False
        self.allocate(seq, num_new_tokens, computed_blocks)
        return True

    def _take_free_block(self) -> int:
        if not self.free_queue:
            raise RuntimeError("no free KV-cache block (the scheduler must call can_allocate first)")
        b, _ = self.free_queue.popitem(last=False)
        h = self.block_hash[b]
        if h is not None:  # evict: its old contents are about to be overwritten
            del self.cached_blocks[h]
            self.block_hash[b] = None
            if self.host is not None:
                self.host.offload(h, b)
        self.ref_counts[b] = 1
        return b

    def _register_full_blocks(self, seq: Sequence, num_full_blocks: int) -> None:
        toks = seq.token_ids
        if toks and toks[-1] < 0:  # a pending token: its block's hash is not known yet
            num_full_blocks = min(num_full_blocks, (len(toks) - 1) // self.block_size)
        # slots allocated for draft tokens (speculative decoding) hold no known token yet
        num_full_blocks = min(num_full_blocks, len(toks) // self.block_size)
        if num_full_blocks <= seq.num_registered_blocks:
            return
        hashes = self._hash_blocks(seq, num_full_blocks)
        table = seq.block_table
        for i in range(seq.num_registered_blocks, num_full_blocks):
            h, b = hashes[i], table[i]
            if self.block_hash[b] is None and h not in self.cached_blocks:  # first copy of a prefix wins
                self.cached_blocks[h] = b
                self.block_hash[b] = h
                self._pending.append(b)
        seq.num_registered_blocks = num_full_blocks

    def _load_from_host(self, slot: int, h: int) -> int:
        """A host prefix-cache hit: a fresh device block, registered under ``h``, that this step's copy fills."""
        b = self._take_free_block()
        self.host.load(slot, b)
        if h not in self.cached_blocks:
            self.cached_blocks[h] = b
            self.block_hash[b] = h
            self._pending.append(b)
        return b

    # ---- host tier: preemption by swap ------------------------------------------------------------------

    def swap_out(self, seq: Sequence) -> bool:
        """Move a preempted sequence's blocks to host slots (its ``num_computed_tokens`` stays); False, with
        nothing changed, when the host tier lacks the slots."""
        if self.host is None or not seq.block_table:
            return False
        slots = self.host.swap_out(seq.block_table)
        if slots is None:
            return False
        self._free_device(seq)
        seq.host_blocks = slots
        return True

    def swap_in(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Bring a swapped-out sequence's blocks back into fresh device blocks and allocate its next
        ``num_new_tokens``; False, with nothing changed, when the device lacks the blocks."""
        if self.blocks_needed(seq.num_computed_tokens + num_new_tokens) > len(self.free_queue):
            return False
        blocks = [self._take_free_block() for _ in seq.host_blocks]
        self.host.swap_in(seq.host_blocks, blocks)
        seq.host_blocks = []
        seq.block_table = blocks
        self.allocate(seq, num_new_tokens)
        return True

    def take_swaps(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The host copies queued for the step being scheduled: (swap_out, swap_in) pairs."""
        return self.host.take_swaps() if self.host is not None else ([], [])

    def drop_host_copies(self) -> None:
        """A step failed: forget the queued copies and the host prefix cache (its copies may be missing)."""
        if self.host is not None:
            self.host.take_swaps()
            self.host.clear_cache()

    def take_pending_hashes(self) -> list[int]:
        """The blocks registered since the last call (for the step being scheduled); keep them until the step
        ran, to ``drop_hashes`` them if it failed."""
        pending, self._pending = self._pending, []
        return pending

    def drop_hashes(self, blocks: list[int]) -> None:
        """A step failed: unregister the blocks registered for it (their K/V may be missing)."""
        for b in blocks:
            h = self.block_hash[b]
            if h is not None:
                del self.cached_blocks[h]
                self.block_hash[b] = None

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks (device and host)."""
        if seq.host_blocks:
            self.host.release(seq.host_blocks)
            seq.host_blocks = []
        self._free_device(seq)

    def _free_device(self, seq: Sequence) -> None:
        """Blocks reaching ref_count 0 join the free queue: uncached ones at the front (reused first), cached
        ones at the back, the sequence's last block first so that common prefixes outlive their tails."""
        for b in reversed(seq.block_table):
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                self.free_queue[b] = None
                if self.block_hash[b] is None:
                    self.free_queue.move_to_end(b, last=False)
        seq.block_table = []
        seq.num_registered_blocks = 0

    def reset_prefix_cache(self) -> bool:
        """Forget all cached hashes (only when no block is in use, as vLLM). Returns whether it did."""
        if len(self.free_queue) != self.num_blocks:
            return False
        self.cached_blocks.clear()
        self.block_hash = [None] * self.num_blocks
        if self.host is not None:
            self.host.clear_cache()
        return True
