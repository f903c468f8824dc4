"""The n-gram (prompt lookup) proposer: drafts come from the sequence's own earlier tokens, on the host.

For n from ``prompt_lookup_max`` down to ``prompt_lookup_min``, the last n tokens of the context
(prompt + output) are searched for earlier in the context; at the earliest match of the longest n, the up to k
tokens that followed it are the draft (vLLM's rule: the earliest match has the most tokens after it, so a run
of a repeated token or phrase gets full drafts). Repetitive text (code, quotes of the prompt, lists) gets long
accepted runs; the proposal costs O(n * context) numpy compares per sequence and step, no device work.
"""

from __future__ import annotations

import numpy as np


class NgramProposer:
    def __init__(self, num_speculative_tokens: int, prompt_lookup_max: int, prompt_lookup_min: int) -> None:
        if not 1 <= prompt_lookup_min <= prompt_lookup_max:
            raise ValueError(f"need 1 <= prompt_lookup_min ({prompt_lookup_min}) <= prompt_lookup_max "
                             f"({prompt_lookup_max})")
        self.k = num_speculative_tokens
        self.max_n = prompt_lookup_max
        self.min_n = prompt_lookup_min

    def propose(self, token_ids: list[int], max_tokens: int | None = None) -> list[int]:
        """Up to ``min(k, max_tokens)`` draft tokens to follow ``token_ids`` (prompt + output so far, all
        known ids); [] when no suffix n-gram occurs earlier."""
        k = self.k if max_tokens is None else min(self.k, max_tokens)
        length = len(token_ids)
        if k <= 0 or length < self.min_n + 1:
            return []
        a = np.asarray(token_ids, np.int64)
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            # match[p]: a[p:p + n] equals the last n tokens, for p < length - n (a token follows the match)
            match = a[: length - n] == a[length - n]
            for j in range(1, n):
                match &= a[j : length - n + j] == a[length - n + j]
            hits = np.flatnonzero(match)
            if hits.size:
                p = int(hits[0]) + n  # the earliest match: the draft continues after it
                return a[p : p + k].tolist()
        return []
