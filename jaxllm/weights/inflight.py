"""A byte budget on the weight loader's host->device copies still in flight (bounds peak host RSS while loading).

``jax.make_array_from_callback`` returns before its copies finish, and the numpy shard buffers it was given
(dtype conversions, fused stacks, faulted-in file pages) stay alive until they do.
"""

from __future__ import annotations

import collections

DEFAULT_INFLIGHT_BYTES = 2 << 30  # EngineArgs.load_inflight_bytes' default


class InFlightCopies:
    """Bounds the bytes of placed arrays whose host->device copies may still be running.

    Why: ``jax.make_array_from_callback`` returns before its copies finish, and the numpy shard buffers (dtype
    conversions, fused stacks, faulted-in file pages) stay alive until they do, so placing a 15 GiB checkpoint can
    grow host RSS with every copy in flight. After each ``add``, while more than ``budget_bytes`` (counted from
    ``.nbytes``, once per array even when a replicated one is copied to several devices) are not known to be
    ready, the oldest arrays are waited on (``block_until_ready``). This bounds the copies in flight only: the
    tensor being read and converted and the checkpoint's mapped file pages come on top (measured loader share on
    the H200, 8B dims: 3.8-4.9 GiB, docs/performance.md; other budgets not compared). The arrays
    themselves are not changed."""

    def __init__(self, budget_bytes: int = DEFAULT_INFLIGHT_BYTES):
        if not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"budget_bytes={budget_bytes!r} must be an integer >= 0")
        self.budget_bytes = budget_bytes
        self._arrays: collections.deque = collections.deque()
        self.bytes_in_flight = 0

    def add(self, array, nbytes: int | None = None):
        """Register a just-placed array (returned unchanged) as ``nbytes`` (default ``array.nbytes``) of host
        buffers; then wait on the oldest registered arrays, oldest first, while over budget."""
        nbytes = array.nbytes if nbytes is None else nbytes
        self._arrays.append((array, nbytes))
        self.bytes_in_flight += nbytes
        while self.bytes_in_flight > self.budget_bytes:
            oldest, oldest_bytes = self._arrays.popleft()
            oldest.block_until_ready()
            self.bytes_in_flight -= oldest_bytes
        return array
