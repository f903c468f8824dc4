"""Speculative decoding on the runner side (host, numpy): the per-row arrays the sampler program verifies
drafts with, and the conversion of its output into accepted tokens per sequence.

Rows are ragged: a speculative sequence with k drafts owns k + 1 consecutive sampling rows (its
``ScheduledSeq.spec_rows``), every other sequence one; padding rows follow, up to L.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxllm.engine.batch import RunnerOutput, ScheduledBatch, ScheduledSeq
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.sampling_metadata import row_logprobs, to_runner_output
from jaxllm.spec_decode import SpeculativeConfig
from jaxllm.spec_decode.auto import speculating_seqs_cap
from jaxllm.spec_decode.cost import SpecCostModel, platform_peaks, step_cost


def sampling_rows(seqs: Sequence[ScheduledSeq]) -> list[ScheduledSeq]:
    """Every sampling row of a step, in order (what the sampling metadata is built from)."""
    return [row for s in seqs for row in s.sampling_rows()]


def spec_arrays(seqs: Sequence[ScheduledSeq], num_rows: int, draft_rows: dict[int, int] | None = None,
                num_draft_rows: int = 0) -> np.ndarray:
    """[2, L] int32: row 0 = the draft token each row's sample must equal (-1: none), row 1 = the first row
    of the row's sequence (padding rows: themselves). Sampled drafts (``draft_rows``: seq_id -> its row in each
    draft step's distributions of ``num_draft_rows`` rows) add row 2: the index of row j's q in the k steps'
    concatenated distributions, j * num_draft_rows + that row (-1: none)."""
    out = np.full((2 if draft_rows is None else 3, num_rows), -1, np.int32)
    out[1] = np.arange(num_rows)
    r = 0
    for s in seqs:
        n = len(s.sampling_rows())
        out[0, r:r + n - 1] = s.draft_token_ids
        out[1, r:r + n] = r
        if draft_rows is not None and s.seq_id in draft_rows and s.draft_token_ids:
            out[2, r:r + n - 1] = np.arange(n - 1) * num_draft_rows + draft_rows[s.seq_id]
        r += n
    return out


def to_spec_runner_output(seqs: Sequence[ScheduledSeq], sampler_output, valid: np.ndarray) -> RunnerOutput:
    """Fetched (SamplerOutput [L rows], valid [L]) -> RunnerOutput: ``accepted`` (and ``accepted_logprobs``) for
    speculative sequences, ``sampled`` (and ``logprobs``) for the others."""
    rows = sampling_rows(seqs)
    plain = RunnerOutput(sampled={})
    tokens = np.asarray(sampler_output.token_ids)
    nonfinite = getattr(sampler_output, "nonfinite", None)
    r = 0
    for s in seqs:
        n = len(s.sampling_rows())
        if not s.draft_token_ids:
            part = to_runner_output([s], _RowView(sampler_output, r))
            plain.sampled.update(part.sampled)
            plain.logprobs.update(part.logprobs)
            plain.nonfinite.update(part.nonfinite)
        else:
            emitted = [j for j in range(r, r + n) if valid[j]]
            bad = [j for j in emitted if nonfinite is not None and nonfinite[j]]
            if bad:  # the tokens before the first flagged row stand; the sequence then ends with an error
                emitted = emitted[:emitted.index(bad[0])]
                plain.nonfinite.add(s.seq_id)
            plain.accepted[s.seq_id] = [int(tokens[j]) for j in emitted]
            if s.sampling_params.logprobs is not None:
                plain.accepted_logprobs[s.seq_id] = [row_logprobs(rows[j], sampler_output, j, int(tokens[j]))
                                                     for j in emitted]
        r += n
    return plain


class _RowView:
    """A fetched SamplerOutput seen from row ``r`` on (so ``to_runner_output`` reads row r as row 0)."""

    def __init__(self, out, r: int) -> None:
        for name in ("token_ids", "logprob", "rank", "top_ids", "top_logprobs", "nonfinite"):
            value = getattr(out, name, None)
            setattr(self, name, None if value is None else value[r:])


@dataclasses.dataclass
class DraftProbs:
    """The draft model's distributions of one proposal with sampled drafts: ``arrays`` (k device arrays [D, V]
    f32: q of each draft step's rows, zeros past the last step) and ``rows`` (seq_id -> its row in them)."""

    arrays: tuple
    rows: dict[int, int]

    @property
    def num_rows(self) -> int:
        return self.arrays[0].shape[0]


def spec_cost_model(config: SpeculativeConfig | None, cfg, mesh, kv_dtype, draft=None) -> SpecCostModel | None:
    """The automatic speculation rule's step costs (``jaxllm.spec_decode.cost``) of the target ``cfg`` on
    ``mesh``'s platform with a KV cache of ``kv_dtype`` (and the ``draft`` runner's model), or None without
    speculative decoding or with ``disable_by_batch_size`` (vLLM's rule needs no costs)."""
    if config is None or not config.auto:
        return None
    device = mesh.devices.flat[0]
    peaks = platform_peaks(device.platform, device.device_kind)
    n = mesh.devices.size
    draft_cost = None if draft is None else draft.step_cost(peaks, n)
    return SpecCostModel(step_cost(cfg, peaks, kv_dtype.itemsize, n), config.num_speculative_tokens, draft_cost)


class SpecLayout:
    """The runner's shapes under speculative decoding (``config`` None: none). Every step of a bucket computes
    L logits rows, L = S without speculation; with it, room for k drafts of every sequence that may speculate
    (``max_spec_seqs``, D: ``jaxllm.spec_decode.auto.speculating_seqs_cap``) within the T tokens. The forward's
    ``dims`` gain L as a fourth entry and the sampler program takes the [2, L] verification arrays
    (``spec_arrays``) as a third argument; both are compiled at start-up for the configured k."""

    def __init__(self, config: SpeculativeConfig | None, max_num_seqs: int = 1, cost: SpecCostModel | None = None):
        """``cost``: ``spec_cost_model``'s (the automatic rule's cap depends on it)."""
        self.config = config
        self.max_spec_seqs = None if config is None else speculating_seqs_cap(config, max_num_seqs, cost)

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def num_rows(self, bucket: Bucket) -> int:
        """L: the logits / sampling rows of ``bucket``'s step."""
        if self.config is None:
            return bucket.num_seqs
        spec_seqs = min(bucket.num_seqs, self.max_spec_seqs)
        return min(bucket.num_tokens, bucket.num_seqs + spec_seqs * self.config.num_speculative_tokens)

    def dims(self, bucket: Bucket, max_blocks_per_seq: int) -> tuple[int, ...]:
        """The forward's static dims: (T, S, P), or (T, S, P, L) with speculative decoding."""
        dims = (bucket.num_tokens, bucket.num_seqs, max_blocks_per_seq)
        return dims + (self.num_rows(bucket),) if self.enabled else dims

    def step_rows(self, batch: ScheduledBatch, bucket: Bucket) -> int | None:
        """``build_step_inputs``'s ``num_rows`` for ``batch`` in ``bucket`` (None without speculation);
        ValueError when the batch has more sampling rows than the bucket's programs were compiled for."""
        if not self.enabled:
            return None
        rows = self.num_rows(bucket)
        if batch.num_sampling_rows > rows:
            raise ValueError(f"a step of {batch.num_sampling_rows} sampling rows exceeds bucket {bucket}'s {rows} "
                             f"(more drafts than speculative_config allows)")
        return rows

    @property
    def sampled_drafts(self) -> bool:
        """Whether drafts may be sampled (a draft model proposes for random requests): the runner then also
        compiles the sampler variants that verify them (``SampleKey.sampled_drafts``)."""
        return self.enabled and self.config.uses_draft_runner

    def verify_args(self, seqs: Sequence[ScheduledSeq], num_rows: int,
                    probs: DraftProbs | None = None) -> tuple[np.ndarray, ...]:
        """The sampler program's extra host arguments: (spec_arrays [2, L],), or [3, L] with the q index of
        sampled drafts (``probs``), or () without speculation."""
        if not self.enabled:
            return ()
        if probs is None:
            return (spec_arrays(seqs, num_rows),)
        return (spec_arrays(seqs, num_rows, probs.rows, probs.num_rows),)

    def rows(self, seqs: Sequence[ScheduledSeq]) -> Sequence[ScheduledSeq]:
        """The sampling rows the sampling metadata is built from: one per sequence, or each sequence's k + 1."""
        return sampling_rows(seqs) if self.enabled else seqs
