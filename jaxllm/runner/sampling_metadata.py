"""Host side of sampling: pack each step's SamplingParams into fixed-shape numpy arrays for the jitted
sampler.

``build_sampling_metadata(seqs, padded_num_seqs, vocab_size)`` returns a ``SamplingMetadata`` (a registered
dataclass pytree of numpy arrays, ``None`` for the parts the step does not need) and a ``SamplerConfig``
(frozen, hashable: a STATIC jit argument that picks the compiled sampler variant). ``to_runner_output`` turns
the fetched ``SamplerOutput`` back into ``RunnerOutput`` fields. The device side is
``jaxllm/models/sampler.py``.

The sampler variants (``SamplerConfig``, the start-up set, ``covers``) are in ``sampler_config.py``; what one
request's SamplingParams contributes to a row (read and checked once per params object) in ``sampling_rows.py``.

Padding rows (index >= len(seqs)) and rows with ``sample=False`` (a prefill chunk that does not reach the end
of the prompt) are neutral: greedy, nothing masked; their sampled token is ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxllm.engine.batch import RunnerOutput, ScheduledSeq, TokenLogprobs
from jaxllm.models.sampler_filters import TOPK_CANDIDATES
from jaxllm.runner.sampler_config import (
    GREEDY_CONFIG,
    PENALTY_MIN_LEN,
    SPARSE_WIDTHS,
    SamplerConfig,
    logprobs_width,
)
from jaxllm.runner.sampling_rows import bad_words_banned_ids, banned_ids, cached_row, start_up_variant
from jaxllm.sampling_params import MAX_LOGPROBS

_cached_row = cached_row  # the name jaxllm.spec_decode.draft_sampling imports
# bad_words_banned_ids and start_up_variant (sampling_rows.py) keep their import path here.
__all__ = ["SamplingMetadata", "bad_words_banned_ids", "build_sampling_metadata",
           "dummy_sampling_metadata", "pack_sampling_metadata", "row_logprobs", "start_up_variant",
           "to_runner_output", "unpack_sampling_metadata"]

_FIELDS = (
    "temperature",
    "greedy",
    "top_k",
    "top_p",
    "min_p",
    "seeds",
    "output_index",
    "bias_ids",
    "bias_values",
    "allowed_ids",
    "has_allowed",
    "banned_ids",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "penalty_token_ids",
    "prompt_len",
    "grammar_bitmask",
)


@dataclasses.dataclass
class SamplingMetadata:
    """Per-row sampling inputs, S = padded_num_seqs rows. All ``None`` under ``GREEDY_CONFIG``; the penalty
    fields are ``None`` unless ``penalty_len``. Sparse id arrays are padded with ``vocab_size`` (dropped)."""

    temperature: Any = None  # [S] f32; 1.0 on greedy rows
    greedy: Any = None  # [S] bool; temperature < SAMPLING_EPS, or a neutral row
    top_k: Any = None  # [S] i32; vocab_size = off
    top_p: Any = None  # [S] f32; 1.0 = off
    min_p: Any = None  # [S] f32; 0.0 = off
    seeds: Any = None  # [S, 2] u32: threefry key data (seed >> 32, seed & 0xffffffff)
    output_index: Any = None  # [S] i32: folded into the key, the position in the request's random stream
    bias_ids: Any = None  # [S, bias_width] i32
    bias_values: Any = None  # [S, bias_width] f32
    allowed_ids: Any = None  # [S, allowed_width] i32
    has_allowed: Any = None  # [S] bool: the row restricts sampling to allowed_ids
    banned_ids: Any = None  # [S, banned_width] i32: min_tokens stop ids + bad words' last tokens
    repetition_penalty: Any = None  # [S] f32; 1.0 = off
    frequency_penalty: Any = None  # [S] f32; 0.0 = off
    presence_penalty: Any = None  # [S] f32; 0.0 = off
    penalty_token_ids: Any = None  # [S, penalty_len] i32: prompt then output tokens
    prompt_len: Any = None  # [S] i32: penalty_token_ids[:, :prompt_len] are prompt tokens
    grammar_bitmask: Any = None  # [S, grammar_words] i32: bit v % 32 of word v // 32 = token v allowed; -1 = all


jax.tree_util.register_dataclass(SamplingMetadata, data_fields=list(_FIELDS), meta_fields=[])


def _ladder(n: int, ladder: Sequence[int], what: str) -> int:
    for w in ladder:
        if n <= w:
            return w
    raise ValueError(f"{what}: {n} ids exceed the largest supported width {ladder[-1]}")


def _field_specs(config: SamplerConfig, S: int) -> list[tuple[str, tuple[int, ...], Any, Any]]:
    """(field, shape, numpy dtype, neutral fill) of every array ``config`` needs, in ``_FIELDS`` order."""
    if config.greedy_only:
        return []
    f32, i32, V = np.float32, np.int32, None  # V: fill with the vocabulary size (a dropped id)
    specs = [
        ("temperature", (S,), f32, 1.0), ("greedy", (S,), np.bool_, True), ("top_k", (S,), i32, V),
        ("top_p", (S,), f32, 1.0), ("min_p", (S,), f32, 0.0), ("seeds", (S, 2), np.uint32, 0),
        ("output_index", (S,), i32, 0), ("bias_ids", (S, config.bias_width), i32, V),
        ("bias_values", (S, config.bias_width), f32, 0.0), ("allowed_ids", (S, config.allowed_width), i32, V),
        ("has_allowed", (S,), np.bool_, False), ("banned_ids", (S, config.banned_width), i32, V),
    ]
    if config.penalty_len:
        specs += [("repetition_penalty", (S,), f32, 1.0), ("frequency_penalty", (S,), f32, 0.0),
                  ("presence_penalty", (S,), f32, 0.0), ("penalty_token_ids", (S, config.penalty_len), i32, V),
                  ("prompt_len", (S,), i32, 0)]
    if config.grammar_words:
        specs.append(("grammar_bitmask", (S, config.grammar_words), i32, -1))
    return specs


def dummy_sampling_metadata(config: SamplerConfig, padded_num_seqs: int, vocab_size: int) -> SamplingMetadata:
    """Neutral metadata (every row greedy, nothing masked) with ``config``'s shapes: for warm-up compiles."""
    return SamplingMetadata(**{
        name: np.full(shape, vocab_size if fill is None else fill, dtype)
        for name, shape, dtype, fill in _field_specs(config, padded_num_seqs)})


def pack_sampling_metadata(md: SamplingMetadata, config: SamplerConfig, padded_num_seqs: int) -> np.ndarray:
    """Every array of ``md`` as the 32-bit words of one flat int32 buffer (floats and uint32 bit-cast, bools as
    0/1): one host->device transfer per step instead of up to seventeen."""
    parts = [np.zeros(0, np.int32)]
    for name, shape, dtype, _ in _field_specs(config, padded_num_seqs):
        a = np.ascontiguousarray(getattr(md, name), dtype).reshape(-1)
        parts.append(a.astype(np.int32) if dtype == np.bool_ else a.view(np.int32))
    return np.concatenate(parts)


def unpack_sampling_metadata(flat: Any, config: SamplerConfig, padded_num_seqs: int) -> SamplingMetadata:
    """Inverse of ``pack_sampling_metadata`` on a traced (or numpy) int32 buffer; shapes are static."""
    fields, offset = {}, 0
    for name, shape, dtype, _ in _field_specs(config, padded_num_seqs):
        n = int(np.prod(shape))
        words = jnp.asarray(flat[offset:offset + n]).reshape(shape)
        offset += n
        if dtype == np.bool_:
            fields[name] = words != 0
        elif dtype == np.int32:
            fields[name] = words
        else:
            fields[name] = lax.bitcast_convert_type(words, jnp.dtype(dtype))
    return SamplingMetadata(**fields)


@dataclasses.dataclass
class _SampledRows:
    """What one step's sampling rows ask for, gathered in one pass over the batch."""

    rows: list[int]  # batch rows that sample
    scalars: list[tuple]  # per row: (temperature, greedy, top_k, top_p, min_p, seed, output_index)
    sparse: dict[str, dict[int, Any]]  # "bias" / "allowed" / "banned" -> row -> its ids (bias: (ids, values))
    penalties: dict[int, tuple[float, float, float]]  # row -> (repetition, frequency, presence)
    grammar: dict[int, np.ndarray]  # row -> allowed-token bits (structured outputs)
    logprobs: int  # the widest logprobs row (0: none)
    min_p: bool  # some row filters by min_p
    filtered: bool  # some random row filters by top_k or top_p
    top_k: bool  # some random row's top_k fits the top-value candidates
    wide: bool  # some random row may draw beyond its top values: the race over the vocabulary

    def plain_greedy(self) -> bool:
        """Every row greedy with nothing masked, penalized or logged: the greedy-only sampler serves it."""
        return all(r[1] for r in self.scalars) and not (
            self.logprobs or self.penalties or self.grammar or any(self.sparse.values()))


def build_sampling_metadata(
    seqs: Sequence[ScheduledSeq], padded_num_seqs: int, vocab_size: int, max_logprobs: int = MAX_LOGPROBS,
    logprobs_mode: str = "raw_logprobs",
) -> tuple[SamplingMetadata, SamplerConfig]:
    """Pack one step's sequences (row i = seqs[i], padded to ``padded_num_seqs`` rows) into numpy arrays;
    ``max_logprobs`` (the LLM's) sets the logprobs width of rows asking for more than ``MAX_LOGPROBS``;
    ``logprobs_mode`` (the LLM's) what their logprobs report.

    Returns ``(metadata, config)``: pass ``metadata`` (or ``jax.device_put(metadata)``) as a traced argument
    and ``config`` as a static argument of the jitted sampler. Each SamplingParams object is read and checked
    once (cached by identity); a step costs a few us per row, plus each row's token ids under penalties."""
    if len(seqs) > padded_num_seqs:
        raise ValueError(f"{len(seqs)} sequences do not fit padded_num_seqs={padded_num_seqs}")
    gathered = _gather_rows(seqs, vocab_size, max_logprobs)
    if gathered.plain_greedy():
        return SamplingMetadata(), GREEDY_CONFIG
    config = _step_config(gathered, seqs, vocab_size, logprobs_mode)
    md = dummy_sampling_metadata(config, padded_num_seqs, vocab_size)
    _fill_rows(md, gathered, seqs)
    return md, config


def _gather_rows(seqs: Sequence[ScheduledSeq], vocab_size: int, max_logprobs: int) -> _SampledRows:
    """Every sampling row's scalars and what it masks, penalizes or logs (``cached_row`` reads each
    SamplingParams once)."""
    rows, scalars, sparse, penalties, logprobs = [], [], {"bias": {}, "allowed": {}, "banned": {}}, {}, 0
    min_p = filtered = top_k_ = wide = False
    grammar: dict[int, np.ndarray] = {}
    for i, seq in enumerate(seqs):
        if not seq.sample:
            continue
        sp = seq.sampling_params
        temperature, greedy, top_k, top_p, min_p_, bias, allowed, words, pen, wants_logprobs = cached_row(
            sp, vocab_size
        )
        rows.append(i)
        scalars.append(
            (temperature, greedy, top_k, top_p, min_p_, int(seq.rng_seed) & (2**64 - 1), int(seq.output_index))
        )
        if bias is not None:
            sparse["bias"][i] = bias
        if allowed is not None:
            sparse["allowed"][i] = allowed
        banned = banned_ids(seq, words, vocab_size) if words or seq.banned_token_ids else None
        if banned is not None:
            sparse["banned"][i] = banned
        if pen != (1.0, 0.0, 0.0):
            penalties[i] = pen
        if seq.grammar_bitmask is not None:
            grammar[i] = seq.grammar_bitmask
        if wants_logprobs:
            logprobs = max(logprobs, logprobs_width(sp.logprobs, vocab_size, max_logprobs))
        min_p = min_p or min_p_ > 0.0
        if not greedy:
            filtered = filtered or top_k < vocab_size or top_p < 1.0
            top_k_ = top_k_ or top_k < vocab_size and top_k <= TOPK_CANDIDATES
            wide = wide or top_k >= min(TOPK_CANDIDATES, vocab_size) and vocab_size > TOPK_CANDIDATES
    return _SampledRows(rows, scalars, sparse, penalties, grammar, logprobs, min_p, filtered, top_k_, wide)


def _step_config(g: _SampledRows, seqs: Sequence[ScheduledSeq], vocab_size: int,
                 logprobs_mode: str = "raw_logprobs") -> SamplerConfig:
    """The sampler variant of a step: array widths on their ladders, the filters some row needs, the engine's
    ``logprobs_mode`` when a row logs."""
    width = lambda kind: _ladder(
        max([len(a if kind != "bias" else a[0]) for a in g.sparse[kind].values()] + [0]), SPARSE_WIDTHS, kind
    )
    longest = max([len(seqs[i].token_ids) for i in g.penalties] + [0])
    return SamplerConfig(
        greedy_only=False,
        num_logprobs=g.logprobs,
        bias_width=width("bias"),
        allowed_width=width("allowed"),
        banned_width=width("banned"),
        penalty_len=max(PENALTY_MIN_LEN, 1 << (longest - 1).bit_length()) if g.penalties else 0,
        grammar_words=-(-vocab_size // 32) if g.grammar else 0,
        random=not all(r[1] for r in g.scalars),
        min_p=g.min_p,
        top_k=g.filtered and (g.top_k or not g.wide),  # alone: every row draws from its top values
        top_p=g.filtered and g.wide,
        logprobs_mode=logprobs_mode if g.logprobs else "raw_logprobs",
    )


def _fill_rows(md: SamplingMetadata, g: _SampledRows, seqs: Sequence[ScheduledSeq]) -> None:
    """Write the gathered rows into ``md`` (neutral rows elsewhere: ``dummy_sampling_metadata``)."""
    if g.rows:
        temperature, greedy, top_k, top_p, min_p, seeds, output_index = zip(*g.scalars)
        rows = g.rows
        md.temperature[rows], md.greedy[rows], md.top_k[rows] = temperature, greedy, top_k
        md.top_p[rows], md.min_p[rows], md.output_index[rows] = top_p, min_p, output_index
        md.seeds[rows] = [(s >> 32, s & 0xFFFFFFFF) for s in seeds]
    for i, (ids, values) in g.sparse["bias"].items():
        md.bias_ids[i, : len(ids)], md.bias_values[i, : len(ids)] = ids, values
    for i, ids in g.sparse["allowed"].items():
        md.allowed_ids[i, : len(ids)], md.has_allowed[i] = ids, True
    for i, ids in g.sparse["banned"].items():
        md.banned_ids[i, : len(ids)] = ids
    for i, bits in g.grammar.items():
        md.grammar_bitmask[i] = bits
    for i, (rep, freq, pres) in g.penalties.items():
        seq = seqs[i]
        md.repetition_penalty[i], md.frequency_penalty[i], md.presence_penalty[i] = rep, freq, pres
        md.penalty_token_ids[i, : len(seq.token_ids)] = seq.token_ids
        md.prompt_len[i] = seq.num_prompt_tokens


def to_runner_output(seqs: Sequence[ScheduledSeq], sampler_output: Any) -> RunnerOutput:
    """Fetched ``SamplerOutput`` (numpy leaves, e.g. from ``jax.device_get``) -> ``RunnerOutput`` with
    ``sampled`` and ``logprobs`` filled, or ``nonfinite`` for a row the sampler flagged (``prompt_logprobs`` is
    left to the runner). ``top`` holds the ``SamplingParams.logprobs`` best (token_id, logprob) pairs, best
    first."""
    out = RunnerOutput(sampled={})
    token_ids = np.asarray(sampler_output.token_ids)
    nonfinite = getattr(sampler_output, "nonfinite", None)
    for i, seq in enumerate(seqs):
        if not seq.sample:
            continue
        if nonfinite is not None and nonfinite[i]:
            out.nonfinite.add(seq.seq_id)
            continue
        token = int(token_ids[i])
        out.sampled[seq.seq_id] = token
        num = getattr(seq.sampling_params, "logprobs", None)
        if num is None:
            continue
        out.logprobs[seq.seq_id] = row_logprobs(seq, sampler_output, i, token)
    return out


def row_logprobs(seq: ScheduledSeq, sampler_output: Any, i: int, token: int) -> TokenLogprobs:
    """Row ``i`` of a fetched ``SamplerOutput`` as the ``TokenLogprobs`` of ``token`` for ``seq`` (its
    ``SamplingParams.logprobs`` best pairs, best first; -1: every token of the vocabulary)."""
    num = seq.sampling_params.logprobs
    if sampler_output.logprob is None:
        raise ValueError(f"seq {seq.seq_id} asked for logprobs={num} but the sampler variant returned none")
    top_ids, top_lps = sampler_output.top_ids[i], sampler_output.top_logprobs[i]
    count = len(top_ids) if num == -1 else min(num, len(top_ids))  # -1: the whole vocabulary
    top = [(int(top_ids[j]), float(top_lps[j])) for j in range(count)]
    return TokenLogprobs(token_id=token, logprob=float(sampler_output.logprob[i]),
                         rank=int(sampler_output.rank[i]), top=top)
