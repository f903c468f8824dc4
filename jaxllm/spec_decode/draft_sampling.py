"""The draft model's sampling program (draft-model speculation of random requests; jax).

A draft step of a speculating batch proposes one token per sequence. A greedy request's draft is the draft's
argmax (the forward's own greedy ids serve when every request of the proposal is greedy); a random request's is
a draw from the draft's processed distribution q (temperature, min_p, top-k, top-p of its SamplingParams: the
processing the target applies, so that q is close to the target's p), kept on the device for the verification
(``rejection.sample_and_verify``). The draws are keyed by the request's seed and the output position drafted,
so a seeded request is reproducible.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.runner.sampling_metadata import _cached_row
from jaxllm.spec_decode.rejection import draft_tokens


@dataclasses.dataclass(frozen=True)
class DraftSampleKey:
    """The draft sampling program of a draft bucket with ``num_seqs`` logits rows."""

    num_seqs: int


def draft_row_arrays(seqs, step: int, num_rows: int, vocab_size: int) -> tuple[np.ndarray, ...]:
    """The rows of draft step ``step`` (row r = seqs[r], drafting output position num_output_tokens + step),
    padded to ``num_rows`` greedy rows: (temperature f32, top_k i32, top_p f32, min_p f32, greedy bool, seeds
    [R, 2] u32, output_index i32), ``draft_tokens``'s arguments."""
    temperature, top_k = np.ones(num_rows, np.float32), np.full(num_rows, vocab_size, np.int32)
    top_p, min_p = np.ones(num_rows, np.float32), np.zeros(num_rows, np.float32)
    greedy, seeds = np.ones(num_rows, bool), np.zeros((num_rows, 2), np.uint32)
    output_index = np.zeros(num_rows, np.int32)
    for r, seq in enumerate(seqs):
        t, g, k, p, m = _cached_row(seq.params, vocab_size)[:5]
        temperature[r], greedy[r], top_k[r], top_p[r], min_p[r] = t, g, k, p, m
        s = int(seq.rng_seed) & (2**64 - 1)
        seeds[r] = (s >> 32, s & 0xFFFFFFFF)
        output_index[r] = seq.num_output_tokens + step
    return temperature, top_k, top_p, min_p, greedy, seeds, output_index


def is_random(seq, vocab_size: int) -> bool:
    """Whether ``seq``'s request samples (its drafts are drawn from q, not the draft's argmax)."""
    return not _cached_row(seq.params, vocab_size)[1]


def _draft_sample(logits, temperature, top_k, top_p, min_p, greedy, seeds, output_index, *, out_rows: int,
                  q_rows: int):
    """logits [S, V] and the rows' arrays -> (tokens [out_rows] i32, padded like the forward's greedy ids so
    the next draft step reads them as ``prev_tokens``; q [q_rows, V] f32, cut or padded with zeros)."""
    tokens, q = draft_tokens(logits, temperature, top_k, top_p, min_p, greedy, seeds, output_index)
    s = logits.shape[0]
    tokens = jnp.pad(tokens, (0, max(0, out_rows - s)))[:out_rows]
    q = jnp.pad(q, ((0, max(0, q_rows - s)), (0, 0)))[:q_rows]
    return tokens, q


make_draft_sample = functools.partial(jax.jit, _draft_sample, static_argnames=("out_rows", "q_rows"))
