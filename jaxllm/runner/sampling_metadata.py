"""Host side of sampling: pack each step's SamplingParams into fixed-shape numpy arrays for the jitted sampler.

``build_sampling_metadata(seqs, padded_num_seqs, vocab_size)`` returns a ``SamplingMetadata`` (a registered
dataclass pytree of numpy arrays, ``None`` for the parts the step does not need) and a ``SamplerConfig`` (frozen,
hashable: a STATIC jit argument that picks the compiled sampler variant). ``to_runner_output`` turns the fetched
``SamplerOutput`` back into ``RunnerOutput`` fields. The device side is ``jaxllm/models/sampler.py``.

Variants (each is compiled once per token bucket):
  * ``GREEDY_CONFIG``: every sampling row is greedy with no logprobs, bias, allowed/banned ids or penalties ->
    argmax only; the metadata carries no arrays at all.
  * ``SAMPLE_CONFIG``: temperature, top-k, top-p, min-p, seeds, logit_bias, allowed_token_ids, banned ids
    (min_tokens stop ids and bad words), with sparse widths at the bottom of the ladder.
  * ``FULL_CONFIG``: the same plus top-``MAX_LOGPROBS`` logprobs (used when any row asks for logprobs).
  These three (``STARTUP_CONFIGS``) are what the runner compiles at start-up. A step that needs more compiles
  lazily, on first use, a variant that differs only in shapes: a wider sparse array (more than 8 bias, allowed or
  banned ids in a row: widths from ``SPARSE_WIDTHS``) or penalties (repetition/frequency/presence), which carry the
  prompt+output token ids padded to a power-of-two length ``penalty_len`` (>= ``PENALTY_MIN_LEN``).

Padding rows (index >= len(seqs)) and rows with ``sample=False`` (a prefill chunk that does not reach the end of
the prompt) are neutral: greedy, nothing masked; their sampled token is ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from jaxllm.engine.batch import RunnerOutput, ScheduledSeq, TokenLogprobs

MAX_LOGPROBS = 20  # vLLM's default max_logprobs: the static top-k width of sample logprobs
SPARSE_WIDTHS = (8, 64, 512, 4096, 32768, 262144)  # widths of bias/allowed/banned id arrays
PENALTY_MIN_LEN = 64  # penalty token arrays have a power-of-two length >= this
SAMPLING_EPS = 1e-5  # temperature below this is greedy (vLLM's _SAMPLING_EPS)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static jit argument selecting the sampler variant; every field is a plain int/bool.

    ``greedy_only``: argmax of the raw logits, nothing else (all other fields must be 0).
    ``num_logprobs``: 0, or the static top-k width of the returned logprobs (``MAX_LOGPROBS``).
    ``bias_width`` / ``allowed_width`` / ``banned_width``: widths W of the sparse id arrays (from ``SPARSE_WIDTHS``).
    ``penalty_len``: 0 = no penalties, else the length L of the padded prompt+output token array."""

    greedy_only: bool = True
    num_logprobs: int = 0
    bias_width: int = 0
    allowed_width: int = 0
    banned_width: int = 0
    penalty_len: int = 0

    def __post_init__(self):
        widths = (self.num_logprobs, self.bias_width, self.allowed_width, self.banned_width, self.penalty_len)
        if self.greedy_only and any(widths):
            raise ValueError(f"greedy_only SamplerConfig must have zero widths, got {self}")
        if not self.greedy_only:
            for name in ("bias_width", "allowed_width", "banned_width"):
                if getattr(self, name) not in SPARSE_WIDTHS:
                    raise ValueError(f"SamplerConfig.{name}={getattr(self, name)} is not in {SPARSE_WIDTHS}")
            if self.num_logprobs not in (0, MAX_LOGPROBS):
                raise ValueError(f"SamplerConfig.num_logprobs={self.num_logprobs} must be 0 or {MAX_LOGPROBS}")
            if self.penalty_len and (self.penalty_len < PENALTY_MIN_LEN or self.penalty_len & (self.penalty_len - 1)):
                raise ValueError(f"SamplerConfig.penalty_len={self.penalty_len} must be 0 or a power of two "
                                 f">= {PENALTY_MIN_LEN}")


GREEDY_CONFIG = SamplerConfig()
SAMPLE_CONFIG = SamplerConfig(greedy_only=False, bias_width=SPARSE_WIDTHS[0], allowed_width=SPARSE_WIDTHS[0],
                              banned_width=SPARSE_WIDTHS[0])
FULL_CONFIG = dataclasses.replace(SAMPLE_CONFIG, num_logprobs=MAX_LOGPROBS)
STARTUP_CONFIGS = (GREEDY_CONFIG, SAMPLE_CONFIG, FULL_CONFIG)

_FIELDS = ("temperature", "greedy", "top_k", "top_p", "min_p", "seeds", "output_index",
           "bias_ids", "bias_values", "allowed_ids", "has_allowed", "banned_ids",
           "repetition_penalty", "frequency_penalty", "presence_penalty", "penalty_token_ids", "prompt_len")


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


jax.tree_util.register_dataclass(SamplingMetadata, data_fields=list(_FIELDS), meta_fields=[])


def _ladder(n: int, ladder: Sequence[int], what: str) -> int:
    for w in ladder:
        if n <= w:
            return w
    raise ValueError(f"{what}: {n} ids exceed the largest supported width {ladder[-1]}")


def _param(sp: Any, name: str, default: Any) -> Any:
    value = getattr(sp, name, default)
    return default if value is None else value


def _check_ids(ids: Sequence[int], vocab_size: int, what: str) -> None:
    for t in ids:
        if not isinstance(t, (int, np.integer)) or not 0 <= t < vocab_size:
            raise ValueError(f"{what} contains token id {t!r}, outside the vocabulary [0, {vocab_size})")


def check_sampling_params(sp: Any, vocab_size: int) -> None:
    """Vocabulary-dependent checks (the rest is SamplingParams' job). Call when a request is added, so a bad
    id fails before any device work; ``build_sampling_metadata`` calls it again for every sampling row."""
    _check_ids(list(_param(sp, "logit_bias", {})), vocab_size, "logit_bias")
    _check_ids(_param(sp, "allowed_token_ids", []), vocab_size, "allowed_token_ids")
    for word in _bad_words_ids(sp):
        _check_ids(word, vocab_size, "bad_words_token_ids")
    num = getattr(sp, "logprobs", None)
    if num is not None and not 0 <= num <= MAX_LOGPROBS:
        raise ValueError(f"logprobs={num} is not supported: ask for 0..{MAX_LOGPROBS} (vLLM's max_logprobs)")
    top_k = _param(sp, "top_k", 0)
    if top_k < -1:
        raise ValueError(f"top_k={top_k} must be -1, 0 (disabled) or a positive integer")


def _bad_words_ids(sp: Any) -> list[list[int]]:
    ids = getattr(sp, "bad_words_token_ids", None)
    if ids is None and getattr(sp, "bad_words", None):
        raise ValueError(f"bad_words={sp.bad_words!r} were not tokenized: bad_words_token_ids is missing")
    return [list(w) for w in (ids or []) if len(w)]


def bad_words_banned_ids(bad_words_token_ids: Sequence[Sequence[int]], output_token_ids: Sequence[int]) -> set[int]:
    """vLLM's bad-words rule: ban a word's last token when its preceding tokens end the output so far."""
    banned = set()
    for word in bad_words_token_ids:
        prefix = list(word[:-1])
        if len(prefix) > len(output_token_ids):
            continue
        if not prefix or list(output_token_ids[len(output_token_ids) - len(prefix):]) == prefix:
            banned.add(int(word[-1]))
    return banned


def _row_values(seq: ScheduledSeq, vocab_size: int) -> dict[str, Any]:
    """Everything one sampling row needs, as plain Python values."""
    sp = seq.sampling_params
    check_sampling_params(sp, vocab_size)
    temperature = float(_param(sp, "temperature", 1.0))
    greedy = temperature < SAMPLING_EPS
    top_k = int(_param(sp, "top_k", 0))
    outputs = seq.token_ids[seq.num_prompt_tokens:]
    banned = set(int(t) for t in seq.banned_token_ids) | bad_words_banned_ids(_bad_words_ids(sp), outputs)
    _check_ids(sorted(banned), vocab_size, "banned_token_ids")
    bias = {int(k): float(v) for k, v in _param(sp, "logit_bias", {}).items()}
    return dict(
        greedy=greedy,
        temperature=1.0 if greedy else temperature,
        top_k=vocab_size if greedy or top_k <= 0 else min(top_k, vocab_size),
        top_p=1.0 if greedy else float(_param(sp, "top_p", 1.0)),
        min_p=0.0 if greedy else float(_param(sp, "min_p", 0.0)),
        seed=int(seq.rng_seed) & (2**64 - 1),
        output_index=int(seq.output_index),
        bias=bias,
        allowed=sorted(set(int(t) for t in _param(sp, "allowed_token_ids", []))),
        banned=sorted(banned),
        repetition=float(_param(sp, "repetition_penalty", 1.0)),
        frequency=float(_param(sp, "frequency_penalty", 0.0)),
        presence=float(_param(sp, "presence_penalty", 0.0)),
        logprobs=getattr(sp, "logprobs", None) is not None,
    )


def _needs_penalties(r: dict) -> bool:
    return r["repetition"] != 1.0 or r["frequency"] != 0.0 or r["presence"] != 0.0


def _choose_config(rows: list[tuple[ScheduledSeq, dict]]) -> SamplerConfig:
    vals = [r for _, r in rows]
    simple = all(r["greedy"] and not (r["logprobs"] or r["bias"] or r["allowed"] or r["banned"]
                                      or _needs_penalties(r)) for r in vals)
    if simple:
        return GREEDY_CONFIG
    widest = lambda key: max([len(r[key]) for r in vals] + [0])
    penalty_len = 0
    if any(_needs_penalties(r) for r in vals):
        longest = max(len(s.token_ids) for s, r in rows if _needs_penalties(r))
        penalty_len = max(PENALTY_MIN_LEN, 1 << max(0, longest - 1).bit_length())
    return SamplerConfig(
        greedy_only=False,
        num_logprobs=MAX_LOGPROBS if any(r["logprobs"] for r in vals) else 0,
        bias_width=_ladder(widest("bias"), SPARSE_WIDTHS, "logit_bias"),
        allowed_width=_ladder(widest("allowed"), SPARSE_WIDTHS, "allowed_token_ids"),
        banned_width=_ladder(widest("banned"), SPARSE_WIDTHS, "banned ids"),
        penalty_len=penalty_len,
    )


def dummy_sampling_metadata(config: SamplerConfig, padded_num_seqs: int, vocab_size: int) -> SamplingMetadata:
    """Neutral metadata (every row greedy, nothing masked) with ``config``'s shapes: for warm-up compiles."""
    S, V = padded_num_seqs, vocab_size
    if config.greedy_only:
        return SamplingMetadata()
    md = SamplingMetadata(
        temperature=np.ones(S, np.float32), greedy=np.ones(S, bool), top_k=np.full(S, V, np.int32),
        top_p=np.ones(S, np.float32), min_p=np.zeros(S, np.float32), seeds=np.zeros((S, 2), np.uint32),
        output_index=np.zeros(S, np.int32),
        bias_ids=np.full((S, config.bias_width), V, np.int32),
        bias_values=np.zeros((S, config.bias_width), np.float32),
        allowed_ids=np.full((S, config.allowed_width), V, np.int32), has_allowed=np.zeros(S, bool),
        banned_ids=np.full((S, config.banned_width), V, np.int32))
    if config.penalty_len:
        md.repetition_penalty = np.ones(S, np.float32)
        md.frequency_penalty = np.zeros(S, np.float32)
        md.presence_penalty = np.zeros(S, np.float32)
        md.penalty_token_ids = np.full((S, config.penalty_len), V, np.int32)
        md.prompt_len = np.zeros(S, np.int32)
    return md


def build_sampling_metadata(seqs: Sequence[ScheduledSeq], padded_num_seqs: int,
                            vocab_size: int) -> tuple[SamplingMetadata, SamplerConfig]:
    """Pack one step's sequences (row i = seqs[i], padded to ``padded_num_seqs`` rows) into numpy arrays.

    Returns ``(metadata, config)``: pass ``metadata`` (or ``jax.device_put(metadata)``) as a traced argument
    and ``config`` as a static argument of the jitted step."""
    if len(seqs) > padded_num_seqs:
        raise ValueError(f"{len(seqs)} sequences do not fit padded_num_seqs={padded_num_seqs}")
    rows = [(i, seq, _row_values(seq, vocab_size)) for i, seq in enumerate(seqs) if seq.sample]
    config = _choose_config([(s, r) for _, s, r in rows])
    md = dummy_sampling_metadata(config, padded_num_seqs, vocab_size)
    if config.greedy_only:
        return md, config
    for i, seq, r in rows:
        md.temperature[i], md.greedy[i], md.top_k[i] = r["temperature"], r["greedy"], r["top_k"]
        md.top_p[i], md.min_p[i] = r["top_p"], r["min_p"]
        md.seeds[i] = (r["seed"] >> 32, r["seed"] & 0xFFFFFFFF)
        md.output_index[i] = r["output_index"]
        if r["bias"]:
            md.bias_ids[i, :len(r["bias"])] = list(r["bias"])
            md.bias_values[i, :len(r["bias"])] = list(r["bias"].values())
        if r["allowed"]:
            md.allowed_ids[i, :len(r["allowed"])] = r["allowed"]
            md.has_allowed[i] = True
        md.banned_ids[i, :len(r["banned"])] = r["banned"]
        if config.penalty_len and _needs_penalties(r):
            md.repetition_penalty[i], md.frequency_penalty[i] = r["repetition"], r["frequency"]
            md.presence_penalty[i] = r["presence"]
            md.penalty_token_ids[i, :len(seq.token_ids)] = seq.token_ids
            md.prompt_len[i] = seq.num_prompt_tokens
    return md, config


def to_runner_output(seqs: Sequence[ScheduledSeq], sampler_output: Any) -> RunnerOutput:
    """Fetched ``SamplerOutput`` (numpy leaves, e.g. from ``jax.device_get``) -> ``RunnerOutput`` with
    ``sampled`` and ``logprobs`` filled (``prompt_logprobs`` is left to the runner). ``top`` holds the
    ``SamplingParams.logprobs`` best (token_id, logprob) pairs, best first."""
    out = RunnerOutput(sampled={})
    token_ids = np.asarray(sampler_output.token_ids)
    for i, seq in enumerate(seqs):
        if not seq.sample:
            continue
        token = int(token_ids[i])
        out.sampled[seq.seq_id] = token
        num = getattr(seq.sampling_params, "logprobs", None)
        if num is None:
            continue
        if sampler_output.logprob is None:
            raise ValueError(f"seq {seq.seq_id} asked for logprobs={num} but the sampler variant returned none")
        top_ids, top_lps = sampler_output.top_ids[i], sampler_output.top_logprobs[i]
        top = [(int(top_ids[j]), float(top_lps[j])) for j in range(min(num, len(top_ids)))]
        out.logprobs[seq.seq_id] = TokenLogprobs(token_id=token, logprob=float(sampler_output.logprob[i]),
                                                 rank=int(sampler_output.rank[i]), top=top)
    return out
