"""Batch planning for the dense encoder path (plain Python, no jax): which requests share a [B, L] batch.

Every token of a padded batch costs compute, and the benchmark's roofline counts only real tokens, so the plan
keeps padding small while compiling few programs:

- ``length_buckets``: the padded lengths, ``per_octave`` evenly spaced steps between consecutive powers of two
  (multiples of 16), then ``max_model_len``. Four per octave (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, ...)
  pad a sequence by less than a quarter of its length (an eighth on average) with about 4 x log2(L / 16)
  programs.
- ``batch_rows``: a bucket's row count, the token budget ``max_num_batched_tokens // L`` (at most
  ``max_num_seqs``): short sequences run in larger batches, and every program does about the same work. Long
  buckets also keep XLA's attention scores ([B, H, L, L] float32, when the fused kernel is not used) within
  ``SCORES_BYTES``.
- ``plan_batches``: requests sorted by length fill batches greedily; a batch takes the next request while the
  bucket of its longest member still has a row for it, so only the last batch of a run leaves rows empty (a
  request just past a bucket boundary joins the longer bucket's batch instead of closing a short one).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

PER_OCTAVE = 4
SCORES_BYTES = 2 << 30


def length_buckets(max_model_len: int, per_octave: int = PER_OCTAVE) -> list[int]:
    """Padded sequence lengths, ascending: ``per_octave`` steps per power of two from 16, rounded up to
    multiples of 16, below ``max_model_len``; then ``max_model_len``."""
    if max_model_len < 1 or per_octave < 1:
        raise ValueError(f"length_buckets needs max_model_len >= 1 and per_octave >= 1, got {max_model_len}, "
                         f"{per_octave}")
    out, n = set(), 16
    while n < max_model_len:
        for k in range(per_octave):
            length = -(-(n + n * k // per_octave) // 16) * 16
            if length < max_model_len:
                out.add(length)
        n *= 2
    return sorted(out) + [max_model_len]


def batch_rows(length: int, max_num_batched_tokens: int, max_num_seqs: int, num_heads: int = 0) -> int:
    """Rows of a batch padded to ``length``: the token budget's worth, at least 1, at most ``max_num_seqs`` and,
    given the model's ``num_heads``, at most what keeps [rows, heads, L, L] float32 scores in ``SCORES_BYTES``."""
    rows = min(max_num_seqs, max_num_batched_tokens // length)
    if num_heads:
        rows = min(rows, SCORES_BYTES // (num_heads * length * length * 4))
    return max(1, rows)


def plan_batches(lengths: Sequence[int], buckets: Sequence[int], max_num_batched_tokens: int,
                 max_num_seqs: int, num_heads: int = 0) -> list[tuple[list[int], int]]:
    """(request indices, padded length) per batch, in launch order (shortest first). Each index appears once;
    every request fits its batch's length (``lengths`` must not exceed ``buckets[-1]``)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    plan: list[tuple[list[int], int]] = []
    i = 0
    while i < len(order):
        length = buckets[bisect_left(buckets, lengths[order[i]])]
        n = 1
        while i + n < len(order):
            grown = buckets[bisect_left(buckets, lengths[order[i + n]])]
            if n + 1 > batch_rows(grown, max_num_batched_tokens, max_num_seqs, num_heads):
                break
            length, n = grown, n + 1
        plan.append((order[i:i + n], length))
        i += n
    return plan


def plan_stats(lengths: Sequence[int], plan: list[tuple[list[int], int]], max_num_batched_tokens: int,
               max_num_seqs: int, num_heads: int = 0) -> dict:
    """What a plan costs: batches, programs (distinct lengths), real and padded tokens (rows x length,
    empty rows included), their ratio, and the batches per length."""
    real = sum(lengths)
    padded = sum(batch_rows(length, max_num_batched_tokens, max_num_seqs, num_heads) * length for _, length in plan)
    per_length = Counter(length for _, length in plan)
    return {"batches": len(plan), "programs": len(per_length), "real_tokens": real, "padded_tokens": padded,
            "padded_over_real": padded / max(real, 1), "batches_per_length": dict(sorted(per_length.items()))}
