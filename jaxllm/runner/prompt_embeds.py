"""The step's prompt-embeddings input (``LLM(enable_prompt_embeds=True)``): for each of a bucket's T tokens a
flag saying whether it takes a row of the caller's embeddings instead of its token's embedding, and those rows.

Only engines with the option on compile forwards that take it (the others pay nothing). A step whose tokens
are all ids (every decode, every id prompt) passes the bucket's cached all-false input, so the rows go to the
device only for steps that prefill an EmbedsPrompt chunk; a preempted sequence recomputes from the rows its
``Sequence.prompt_embeds`` keeps on the host.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxllm.engine.batch import ScheduledBatch
from jaxllm.parallel.multihost import program_arg
from jaxllm.runner.buckets import Bucket


def check_prompt_embeds(args, model, serves: bool) -> bool:
    """``enable_prompt_embeds``, checked against the runner (``serves``: a generate runner) and the model: a
    ValueError when they cannot take embeddings."""
    if args.enable_prompt_embeds and not serves:
        raise ValueError("enable_prompt_embeds=True is supported with the generate runner only, not pooling")
    if args.enable_prompt_embeds and not getattr(model, "supports_prompt_embeds", False):
        raise ValueError(f"enable_prompt_embeds=True is not supported for {type(model).__name__}")
    return bool(args.enable_prompt_embeds)


def pack_prompt_embeds(batch: ScheduledBatch, query_start_loc: np.ndarray, num_tokens: int, hidden_size: int,
                       dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """(is_embed [T] bool, rows [T, D] ``dtype``) of the batch's EmbedsPrompt prefill chunks, placed at their
    tokens' flat indices (``query_start_loc`` [S + 1]: where each sequence's new tokens start), or None when no
    token of the batch takes an embedding."""
    flags = rows = None
    for i, s in enumerate(batch.seqs):
        embeds = s.prompt_embeds
        if embeds is None or s.start >= len(embeds):  # ids only, or decoding past the prompt
            continue
        if flags is None:
            flags, rows = np.zeros(num_tokens, np.bool_), np.zeros((num_tokens, hidden_size), dtype)
        stop = min(s.end, len(embeds))
        first = int(query_start_loc[i])
        flags[first:first + stop - s.start] = True
        rows[first:first + stop - s.start] = embeds[s.start:stop]
    return None if flags is None else (flags, rows)


class PromptEmbedsInput:
    """The forward's ``prompt_embeds`` argument per bucket: shapes to compile against, the cached all-false
    input, and a step's packed rows on the device (replicated, like the other step inputs)."""

    def __init__(self, hidden_size: int, dtype, sharding):
        self.hidden_size, self.dtype, self.sharding = hidden_size, np.dtype(dtype), sharding
        self._empty: dict[int, tuple] = {}

    def shapes(self, bucket: Bucket) -> tuple:
        T = bucket.num_tokens
        return (jax.ShapeDtypeStruct((T,), np.bool_, sharding=self.sharding),
                jax.ShapeDtypeStruct((T, self.hidden_size), self.dtype, sharding=self.sharding))

    def empty(self, bucket: Bucket) -> tuple:
        """Every token takes its id's embedding."""
        T = bucket.num_tokens
        if T not in self._empty:
            self._empty[T] = (jax.device_put(np.zeros(T, np.bool_), self.sharding),
                              jax.device_put(np.zeros((T, self.hidden_size), self.dtype), self.sharding))
            # (kept on the device: the all-false input costs no transfer per step)
        return self._empty[T]

    def step(self, batch: ScheduledBatch, bucket: Bucket, query_start_loc: np.ndarray) -> tuple:
        packed = pack_prompt_embeds(batch, query_start_loc, bucket.num_tokens, self.hidden_size, self.dtype)
        if packed is None:
            return self.empty(bucket)
        return tuple(program_arg(a, self.sharding) for a in packed)
