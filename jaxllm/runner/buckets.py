"""The bucket ladder: every step is padded to one of a few static shapes so XLA compiles a handful of
programs at start-up and never during ``generate``.

One dimension: the padded token count T. The padded sequence count is tied to it (S = min(T, max_num_seqs)):
decode-only steps have T == S, and a prefill-heavy step with fewer sequences wastes only a few rows of
cheap per-sequence work (logits + sampling of S rows).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Bucket:
    num_tokens: int  # T: padded flattened token count
    num_seqs: int  # S: padded sequence count


def token_ladder(max_num_batched_tokens: int, min_tokens: int = 8) -> list[int]:
    """Powers of two from ``min_tokens`` up to (and always including) max_num_batched_tokens."""
    ladder, t = [], min_tokens
    while t < max_num_batched_tokens:
        ladder.append(t)
        t *= 2
    ladder.append(max_num_batched_tokens)
    return ladder


class BucketLadder:
    def __init__(self, max_num_batched_tokens: int, max_num_seqs: int):
        self.max_num_seqs = max_num_seqs
        self.token_sizes = token_ladder(max_num_batched_tokens)
        self.buckets = [Bucket(t, min(t, max_num_seqs)) for t in self.token_sizes]

    def pick(self, num_tokens: int, num_seqs: int) -> Bucket:
        """Smallest bucket holding ``num_tokens`` tokens and ``num_seqs`` sequences."""
        i = bisect.bisect_left(self.token_sizes, max(num_tokens, num_seqs))
        if i == len(self.buckets) or num_seqs > self.max_num_seqs:
            raise ValueError(f"a step of {num_tokens} tokens / {num_seqs} sequences exceeds the largest bucket "
                             f"{self.buckets[-1]}")
        return self.buckets[i]

    def pick_ready(self, num_tokens: int, num_seqs: int, ready: Callable[[Bucket], bool]) -> Bucket:
        """The smallest bucket holding the step for which ``ready(bucket)`` (its programs are compiled), else
        the smallest holding it (``pick``: the step then waits for its programs). While ``background_compile``
        compiles the rest, a step runs padded into a larger compiled bucket rather than waiting."""
        smallest = self.pick(num_tokens, num_seqs)
        return next((b for b in self.buckets[self.buckets.index(smallest):] if ready(b)), smallest)

    def fallback_buckets(self) -> list[Bucket]:
        """The buckets that every step fits, padded: the smallest holding ``max_num_seqs`` sequences (every
        decode-only step, at decode cost) and the largest (any step). What a GPU compiles up front with
        ``background_compile``."""
        return sorted({self.pick(self.max_num_seqs, self.max_num_seqs), self.buckets[-1]},
                      key=lambda b: b.num_tokens)
