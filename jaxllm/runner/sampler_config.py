"""The sampler's static variants: ``SamplerConfig`` (a hashable STATIC jit argument of the sampler program),
the variants compiled at start-up, and ``covers`` (which compiled variant may serve a step). The per-step
metadata that goes with a variant is built in ``sampling_metadata.py``.

Variants (each is compiled once per sequence bucket, i.e. per padded_num_seqs):
  * ``GREEDY_CONFIG``: every sampling row is greedy with no logprobs, bias, allowed/banned ids or penalties ->
    argmax only; the metadata carries no arrays at all.
  * ``SAMPLE_CONFIG``: temperature, top-k, top-p, min-p, seeds, logit_bias, allowed_token_ids, banned ids
    (min_tokens stop ids and bad words), with sparse widths at the bottom of the ladder.
  * ``FILTER_CONFIG``: ``SAMPLE_CONFIG`` with min_p, top-k and top-p.
  * ``FULL_CONFIG``: ``FILTER_CONFIG`` plus top-``MAX_LOGPROBS`` logprobs. A request for more (up to the LLM's
    ``max_logprobs``; -1, the whole vocabulary) runs a variant whose width is ``max_logprobs``
    (``logprobs_width``), compiled on first use.
  * ``MIN_P_CONFIG``, ``TOP_K_CONFIG``, ``TOP_P_CONFIG``, ``TOP_P_MIN_P_CONFIG``: one filter (or top-p with
    min_p), so that a batch using them runs their passes only: min_p one max pass; top-k (< 64, with or without
    top-p and min_p) the exact top values and nothing else over the vocabulary; top-p the race and the exact
    membership pass (sampler_filters.py); top-p with min_p a max pass first (not the top values
    ``FILTER_CONFIG`` sorts). With ``background_compile`` on the CPU these four are not compiled
    (``FILTER_VARIANTS``): a CPU's start-up and its two cores are better spent elsewhere, and ``FILTER_CONFIG``
    serves their batches.
  Which parts run (random rows, min_p, top-k, top-p, logprobs) is a static field too, so the device never
  branches on data. These eight (``STARTUP_CONFIGS``; ``startup_configs`` gives the logprobs variant the engine's
  ``logprobs_mode``) are what the runner compiles at start-up; a step whose
  exact variant is not compiled runs the cheapest compiled one that ``covers`` it (same shapes, a superset of
  the parts). A step that needs more compiles lazily, on first use, a variant that differs only in shapes: a
  wider sparse array (more than 8 bias, allowed or banned ids in a row: widths from ``SPARSE_WIDTHS``) or
  penalties (repetition/frequency/presence), which carry the prompt+output token ids padded to a power-of-two
  length ``penalty_len`` (>= ``PENALTY_MIN_LEN``), or structured outputs (``grammar_words``: a packed [S,
  ceil(V / 32)] allowed-token bitmask): ``SAMPLE_CONFIG`` with the bitmask is compiled at start-up when the
  tokenizer can serve grammars (``ModelRunner.startup_keys``), other bitmask variants on first use; unconstrained
  batches never run them.
"""

from __future__ import annotations

import dataclasses

# MAX_LOGPROBS (vLLM's default max_logprobs) is the static top-k width of the start-up logprobs variant
from jaxllm.sampling_params import MAX_LOGPROBS

SPARSE_WIDTHS = (8, 32, 128, 512, 2048, 8192, 32768, 262144)  # widths of bias/allowed/banned id arrays
PENALTY_MIN_LEN = 64  # penalty token arrays have a power-of-two length >= this


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static jit argument selecting the sampler variant; every field is a plain int/bool.

    ``greedy_only``: argmax of the raw logits, nothing else (all other fields must be 0).
    ``num_logprobs``: 0, or the static top-k width of the returned logprobs (``logprobs_width``).
    ``bias_width`` / ``allowed_width`` / ``banned_width``: widths W of the sparse id arrays (from
    ``SPARSE_WIDTHS``). ``penalty_len``: 0 = no penalties, else the length L of the padded prompt+output token
    array. ``logprobs_mode``: what the logprob fields hold (the engine's ``logprobs_mode``,
    jaxllm/models/sampler_logprobs.py); set only with ``num_logprobs``, so variants without logprobs are the same
    in every engine."""

    greedy_only: bool = True
    num_logprobs: int = 0
    bias_width: int = 0
    allowed_width: int = 0
    banned_width: int = 0
    penalty_len: int = 0
    grammar_words: int = 0  # 0 = no structured-outputs row, else ceil(V / 32): the bitmask's width in int32 words
    # Which parts of the sampler run, decided on the host: a lax.cond on device data would make XLA read the
    # predicate back to the host (a sync that stalls the launch of the next step).
    random: bool = False  # some row samples (temperature >= SAMPLING_EPS); else argmax of the processed logits
    min_p: bool = False  # some row has min_p > 0
    # top_k: some sampled row has top_k <= TOPK_CANDIDATES: the exact top values run; alone, every sampled row
    # has top_k < TOPK_CANDIDATES and draws from its top values only. top_p: some sampled row draws from the whole
    # vocabulary under top_p or a larger top_k (< V), or beside top-k rows: the race over the vocabulary and the
    # exact membership pass run (jaxllm/models/sampler_filters.py)
    top_k: bool = False
    top_p: bool = False
    logprobs_mode: str = "raw_logprobs"

    def __post_init__(self):
        widths = (self.num_logprobs, self.bias_width, self.allowed_width, self.banned_width, self.penalty_len,
                  self.grammar_words, self.random, self.min_p, self.top_k, self.top_p)
        if self.greedy_only and any(widths):
            raise ValueError(f"greedy_only SamplerConfig must have zero widths and no random rows, got {self}")
        if (self.min_p or self.top_k or self.top_p) and not self.random:
            raise ValueError(f"min_p / top_k / top_p need random=True, got {self}")
        if not self.greedy_only:
            for name in ("bias_width", "allowed_width", "banned_width"):
                if getattr(self, name) not in SPARSE_WIDTHS:
                    raise ValueError(f"SamplerConfig.{name}={getattr(self, name)} is not in {SPARSE_WIDTHS}")
            if self.num_logprobs < 0:
                raise ValueError(f"SamplerConfig.num_logprobs={self.num_logprobs} must be >= 0")
            if self.logprobs_mode != "raw_logprobs" and not self.num_logprobs:
                raise ValueError(f"SamplerConfig.logprobs_mode={self.logprobs_mode!r} needs num_logprobs > 0")
            if self.penalty_len and (
                self.penalty_len < PENALTY_MIN_LEN or self.penalty_len & (self.penalty_len - 1)
            ):
                raise ValueError(
                    f"SamplerConfig.penalty_len={self.penalty_len} must be 0 or a power of two "
                    f">= {PENALTY_MIN_LEN}"
                )


GREEDY_CONFIG = SamplerConfig()
SAMPLE_CONFIG = SamplerConfig(
    greedy_only=False,
    bias_width=SPARSE_WIDTHS[0],
    allowed_width=SPARSE_WIDTHS[0],
    banned_width=SPARSE_WIDTHS[0],
    random=True,
)
FILTER_CONFIG = dataclasses.replace(SAMPLE_CONFIG, min_p=True, top_k=True, top_p=True)
FULL_CONFIG = dataclasses.replace(FILTER_CONFIG, num_logprobs=MAX_LOGPROBS)
# each filter alone, at its own cost (min_p rides free on the top values; beside top-p it needs a max pass)
MIN_P_CONFIG = dataclasses.replace(SAMPLE_CONFIG, min_p=True)
TOP_K_CONFIG = dataclasses.replace(SAMPLE_CONFIG, min_p=True, top_k=True)
TOP_P_CONFIG = dataclasses.replace(SAMPLE_CONFIG, top_p=True)
TOP_P_MIN_P_CONFIG = dataclasses.replace(SAMPLE_CONFIG, min_p=True, top_p=True)
FILTER_VARIANTS = (MIN_P_CONFIG, TOP_K_CONFIG, TOP_P_CONFIG, TOP_P_MIN_P_CONFIG)
STARTUP_CONFIGS = (GREEDY_CONFIG, SAMPLE_CONFIG, FILTER_CONFIG, FULL_CONFIG, *FILTER_VARIANTS)


def startup_configs(logprobs_mode: str = "raw_logprobs") -> tuple[SamplerConfig, ...]:
    """``STARTUP_CONFIGS`` of an engine whose logprobs report ``logprobs_mode``: its logprobs variant carries the
    mode (``FULL_CONFIG`` of that mode; under a processed mode, whose variants serve only steps with their own
    filters (``covers``), the one without filters: greedy and temperature-only rows; a step with filters compiles
    its own on first use)."""
    if logprobs_mode == "raw_logprobs":
        return STARTUP_CONFIGS
    base = SAMPLE_CONFIG if logprobs_mode.startswith("processed") else FULL_CONFIG
    full = dataclasses.replace(base, num_logprobs=MAX_LOGPROBS, logprobs_mode=logprobs_mode)
    return tuple(full if c == FULL_CONFIG else c for c in STARTUP_CONFIGS)


def logprobs_width(num: int | None, vocab_size: int, max_logprobs: int = MAX_LOGPROBS) -> int:
    """The static top-k width of the logprobs program that serves a request for ``num`` logprobs (None: none,
    0 for the sampled token only, -1: the whole vocabulary) under the LLM's ``max_logprobs`` (-1: the
    vocabulary). Two widths, so a batch compiles at most two logprobs programs per shape: ``MAX_LOGPROBS``
    (vLLM's default cap: the start-up ``FULL_CONFIG``) for up to that many, else ``max_logprobs`` itself (a
    request asks for at most that: the engine checks it), compiled on first use; never above the vocabulary."""
    if num is None:
        return 0
    k = vocab_size if num == -1 else num
    if k <= MAX_LOGPROBS:
        return MAX_LOGPROBS
    cap = vocab_size if max_logprobs == -1 else max(max_logprobs, k)
    return min(cap, vocab_size)


def cost_order(config: SamplerConfig) -> tuple:
    """Sort key of the variants that may serve a step: the cheapest first (logprobs, then the exact membership
    pass, the top values, min_p's max pass, noise)."""
    return config.num_logprobs, config.top_p, config.top_k, config.min_p, config.random


def covers(compiled: SamplerConfig, needed: SamplerConfig) -> bool:
    """Whether the ``compiled`` variant can serve a step that needs ``needed``: the same array shapes, and every
    part ``needed`` runs (random rows, min_p, top-k/top-p, logprobs) runs in it too. A part no row uses is
    neutral (thresholds of -inf, no noise on greedy rows, unused logprobs), so the result is the same. Logprobs
    need the same ``logprobs_mode``; a processed mode also the same filters, which decide whether its exact
    top-k / top-p mask (a sort per row) runs: a step whose rows filter nothing does not pay for it."""
    if compiled == needed:
        return True
    if compiled.greedy_only or needed.greedy_only:  # the greedy variant takes no metadata at all
        return False
    filters = lambda c: (c.min_p, c.top_k, c.top_p)
    if needed.num_logprobs and (compiled.logprobs_mode != needed.logprobs_mode or (
            needed.logprobs_mode.startswith("processed") and filters(compiled) != filters(needed))):
        return False
    shapes = lambda c: (c.bias_width, c.allowed_width, c.banned_width, c.penalty_len, c.grammar_words)
    same_shapes = shapes(compiled) == shapes(needed)
    return same_shapes and all(getattr(compiled, f) >= getattr(needed, f)
                               for f in ("random", "min_p", "top_k", "top_p", "num_logprobs"))


def start_up_cover(config: SamplerConfig, logprobs_mode: str = "raw_logprobs") -> SamplerConfig:
    """The variant a step needing ``config`` runs when every start-up variant (``startup_configs``) is compiled
    (GPU start-up): the cheapest that covers it, else ``config`` itself (compiled on first use)."""
    return min([c for c in startup_configs(logprobs_mode) if covers(c, config)] or [config], key=cost_order)
