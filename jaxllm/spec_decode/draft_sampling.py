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
from jax import lax

from jaxllm.runner.sampling_metadata import _cached_row
from jaxllm.spec_decode.rejection import draft_tokens


@dataclasses.dataclass(frozen=True)
class DraftSampleKey:
    """The draft sampling program of a draft bucket with ``num_seqs`` logits rows; ``top_k_top_p``: some row
    uses top-k / top-p (the variant that sorts)."""

    num_seqs: int
    top_k_top_p: bool


def draft_row_arrays(seqs, step: int, num_rows: int, vocab_size: int) -> np.ndarray:
    """The rows of draft step ``step`` (row r = seqs[r], drafting output position num_output_tokens + step),
    padded to ``num_rows`` greedy rows, packed as one int32 buffer [8, R] (one transfer; ``_unpack_rows``):
    temperature, top_k, top_p, min_p, greedy, the seed's two 32-bit words, output_index."""
    f32 = lambda value: np.full(num_rows, value, np.float32).view(np.int32)
    out = np.stack([f32(1.0), np.full(num_rows, vocab_size, np.int32), f32(1.0), f32(0.0),
                    np.ones(num_rows, np.int32), np.zeros(num_rows, np.int32), np.zeros(num_rows, np.int32),
                    np.zeros(num_rows, np.int32)])
    floats = out[[0, 2, 3]].view(np.float32)
    for r, seq in enumerate(seqs):
        t, g, k, p, m = _cached_row(seq.params, vocab_size)[:5]
        floats[:, r] = (t, p, m)
        s = int(seq.rng_seed) & (2**64 - 1)
        out[1, r], out[4, r] = k, g
        out[5:7, r] = np.array([s >> 32, s & 0xFFFFFFFF], np.uint32).view(np.int32)
        out[7, r] = seq.num_output_tokens + step
    out[[0, 2, 3]] = floats.view(np.int32)
    return out


def _unpack_rows(packed: jax.Array) -> tuple[jax.Array, ...]:
    """[8, R] int32 (``draft_row_arrays``) -> ``draft_tokens``'s temperature, top_k, top_p, min_p, greedy,
    seeds [R, 2] u32 and output_index."""
    f32 = lambda row: lax.bitcast_convert_type(row, jnp.float32)
    seeds = lax.bitcast_convert_type(packed[5:7].T, jnp.uint32)
    return f32(packed[0]), packed[1], f32(packed[2]), f32(packed[3]), packed[4] != 0, seeds, packed[7]


def is_random(seq, vocab_size: int) -> bool:
    """Whether ``seq``'s request samples (its drafts are drawn from q, not the draft's argmax)."""
    return not _cached_row(seq.params, vocab_size)[1]


def uses_top_k_top_p(seqs, vocab_size: int) -> bool:
    """Whether a random request of ``seqs`` has top-k or top-p (the draft program variant that sorts)."""
    rows = [_cached_row(s.params, vocab_size) for s in seqs]
    return any(not g and (k < vocab_size or p < 1.0) for _, g, k, p, *_ in rows)


def _draft_sample(logits, packed_rows, *, out_rows: int, q_rows: int, top_k_top_p: bool):
    """logits [S, V] and the rows' packed arrays [8, S] -> (tokens [out_rows] i32, padded like the forward's
    greedy ids so the next draft step reads them as ``prev_tokens``; q [q_rows, V] f32, cut or padded with
    zeros)."""
    tokens, q = draft_tokens(logits, *_unpack_rows(packed_rows), top_k_top_p=top_k_top_p)
    s = logits.shape[0]
    tokens = jnp.pad(tokens, (0, max(0, out_rows - s)))[:out_rows]
    q = jnp.pad(q, ((0, max(0, q_rows - s)), (0, 0)))[:q_rows]
    return tokens, q


make_draft_sample = functools.partial(jax.jit, _draft_sample, static_argnames=("out_rows", "q_rows", "top_k_top_p"))
