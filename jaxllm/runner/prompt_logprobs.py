"""Prompt logprobs (``SamplingParams.prompt_logprobs``) from a step's hidden states.

A step with a sequence that asked for them runs the forward program that also returns the hidden states [T, D];
the logprob of each prompt token given the tokens before it then comes from the raw logits of the row before it
(their log_softmax, or under a ``*_logits`` ``logprobs_mode`` the logits themselves), ``CHUNK`` rows at a time (a [CHUNK, V] logits array, not [T, V]), with the top alternatives: ``TOP_K`` of them
when every request asks for at most that many, else the LLM's ``max_logprobs`` (``logprobs_width``: a second
program, compiled on first use; -1 asks for the whole vocabulary).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.engine.batch import ScheduledBatch, TokenLogprobs
from jaxllm.runner.sampler_config import logprobs_width
from jaxllm.sampling_params import MAX_LOGPROBS

CHUNK = 128  # rows of [chunk, V] logits computed at a time
TOP_K = MAX_LOGPROBS  # the static width of the returned alternatives of up to 20: a request takes its first k


def _rows(batch: ScheduledBatch) -> tuple[list[int], list[int], list]:
    """(row of the step's hidden states, target prompt token, owning sequence) for every prompt position whose
    next token is a prompt token, in the sequences that asked."""
    rows, targets, owners = [], [], []
    offset = 0
    for s in batch.seqs:
        if s.want_prompt_logprobs:
            last = min(s.end, s.num_prompt_tokens - 1)
            for p in range(s.start, last):
                rows.append(offset + p - s.start)
                targets.append(s.token_ids[p + 1])
                owners.append(s)
        offset += s.num_new_tokens
    return rows, targets, owners


def prompt_logprobs(batch: ScheduledBatch, hidden, program, params, vocab_size: int,
                    max_logprobs: int = MAX_LOGPROBS) -> dict[int, list[TokenLogprobs]]:
    """{seq_id: logprobs of prompt tokens start+1..end} for the sequences of ``batch`` that asked.
    ``program(params, hidden_rows, targets, k=width)`` -> (logprob [N], rank [N], top ids [N, k], top
    logprobs), ``width`` the ``logprobs_width`` of the largest request (``max_logprobs``: the LLM's)."""
    rows, targets, owners = _rows(batch)
    result: dict[int, list[TokenLogprobs]] = {s.seq_id: [] for s in batch.seqs if s.want_prompt_logprobs}
    width = max([logprobs_width(s.sampling_params.prompt_logprobs, vocab_size, max_logprobs)
                 for s in batch.seqs if s.want_prompt_logprobs] + [0])
    for c in range(0, len(rows), CHUNK):
        idx = np.zeros(CHUNK, np.int32)
        tgt = np.zeros(CHUNK, np.int32)
        chunk = rows[c:c + CHUNK]
        idx[:len(chunk)], tgt[:len(chunk)] = chunk, targets[c:c + CHUNK]
        lp, rank, top_ids, top_lp = jax.device_get(program(params, hidden[idx], jnp.asarray(tgt), k=width))
        for j in range(len(chunk)):
            s = owners[c + j]
            k = s.sampling_params.prompt_logprobs
            count = width if k == -1 else min(k, width)  # -1: the whole vocabulary
            top = [(int(top_ids[j, i]), float(top_lp[j, i])) for i in range(count)]
            result[s.seq_id].append(TokenLogprobs(int(tgt[j]), float(lp[j]), int(rank[j]), top))
    return result
