"""Sampling parameters for text generation, with vLLM's fields, defaults and validation messages.

Plain Python (no jax): the engine reads these on the host, the runner's sampler reads the numeric fields.
Everything is validated in the constructor, so a bad value fails before any device work.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import warnings
from typing import Any

from jaxllm.beam_search_params import BeamSearchParams
from jaxllm.sampling_checks import (
    check_bool,
    check_float,
    check_int,
    check_logit_bias,
    check_ranges,
    check_strs,
    check_token_ids,
)
from jaxllm.structured_outputs.params import GuidedDecodingParams, StructuredOutputsParams

# BeamSearchParams lives in jaxllm.beam_search_params; vLLM users import it from here.
__all__ = ["MAX_LOGPROBS", "SAMPLING_EPS", "BeamSearchParams", "RequestOutputKind", "SamplingParams", "SamplingType",
           "check_num_logprobs"]

logger = logging.getLogger(__name__)

SAMPLING_EPS = 1e-5  # temperature below this means greedy (vLLM's constant)
_MAX_TEMP = 1e-2  # 0 < temperature < this is raised to this, as vLLM does (avoids inf/nan in logits / t)
MAX_LOGPROBS = 20  # vLLM's default max_logprobs: logprobs / prompt_logprobs above this are rejected


# SamplingParams.from_optional: fields for which None means "the default" (vLLM's list).
_NONE_MEANS_DEFAULT = ("n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p")


class RequestOutputKind(enum.Enum):
    """What a request's outputs carry while it runs (vLLM's enum). ``LLM.generate``/``chat`` return only final
    outputs, so they run every request as FINAL_ONLY; ``LLMEngine.step`` honours the kind of each request."""

    CUMULATIVE = 0  # every output holds all tokens and text so far
    DELTA = 1  # every output holds only the tokens and text new since the previous one
    FINAL_ONLY = 2  # one output, when the request finishes


class SamplingType(enum.IntEnum):
    GREEDY = 0
    RANDOM = 1
    RANDOM_SEED = 2


def check_num_logprobs(name: str, value: Any) -> int | None:
    """``logprobs`` / ``prompt_logprobs`` as an int >= -1 or None (True means 1). As in vLLM, the cap
    (the LLM's ``max_logprobs``; -1 counts as the whole vocabulary) is checked when the request is added."""
    if value is True:  # vLLM: logprobs=True means 1
        return 1
    value = check_int(name, value, optional=True)
    if value is not None and value < -1:
        raise ValueError(f"{name} must be non-negative or -1, got {value}.")
    return value


@dataclasses.dataclass(kw_only=True, repr=False)
class SamplingParams:
    """Sampling parameters for text generation (vLLM's ``SamplingParams``; keyword-only).

    ``top_k`` 0 and -1 both mean "off" (vLLM quietly accepts -1 and keeps it as given).
    Checked when a request is added, as in vLLM: token ids against the vocabulary, and ``logprobs`` /
    ``prompt_logprobs`` against the LLM's ``max_logprobs`` (``MAX_LOGPROBS`` = 20 by default; -1, the whole
    vocabulary, needs ``max_logprobs`` -1 or at least the vocabulary size).
    ``spaces_between_special_tokens`` only changes the text of tokenizers that are not "fast" (HF's fast
    tokenizers and vLLM ignore it; see ``jaxllm.engine.detokenizer``).
    """

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None
    # None: no truncation; k > 0: keep the last k prompt tokens; -1: keep the last max_model_len tokens.
    truncate_prompt_tokens: int | None = None
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    # Streamed outputs (CUMULATIVE / DELTA through LLMEngine.step) come every this many new tokens; the first
    # and the final output come at once. None: every step that adds tokens.
    stream_interval: int | None = None
    skip_clone: bool = False  # clone() is a shallow copy: the caller promises not to share the object
    # Logprobs as FlatLogprobs (one flat list per field, indexed like the list of dicts) instead of a list
    # of {token_id: Logprob} dicts per position.
    flat_logprobs: bool = False
    # Free-form data kept on the params for user code (custom logits processors, plugins): never read here.
    extra_args: dict[str, Any] | None = None
    structured_outputs: StructuredOutputsParams | None = None
    guided_decoding: GuidedDecodingParams | None = None  # the older name: moved to structured_outputs

    # Set by update_from_tokenizer (engine side); not constructor arguments.
    _bad_words_token_ids: list[list[int]] | None = dataclasses.field(default=None, init=False)
    _all_stop_token_ids: set[int] = dataclasses.field(default_factory=set, init=False)
    _eos_token_id: int | None = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        self.n = check_int("n", self.n)
        for name in (
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "temperature",
            "top_p",
            "min_p",
        ):
            setattr(self, name, check_float(name, getattr(self, name)))
        self.top_k = check_int("top_k", self.top_k)
        self.seed = check_int("seed", self.seed, optional=True)
        if self.seed == -1:
            self.seed = None
        self.stop = check_strs("stop", self.stop, unique=False)
        self.stop_token_ids = list(
            dict.fromkeys(check_token_ids("stop_token_ids", self.stop_token_ids) or [])
        )
        self.bad_words = check_strs("bad_words", self.bad_words)
        for name in (
            "include_stop_str_in_output",
            "ignore_eos",
            "detokenize",
            "skip_special_tokens",
            "spaces_between_special_tokens",
            "flat_logprobs",
            "skip_clone",
        ):
            setattr(self, name, check_bool(name, getattr(self, name)))
        self.max_tokens = check_int("max_tokens", self.max_tokens, optional=True)
        self.min_tokens = check_int("min_tokens", self.min_tokens)
        self.logprobs = check_num_logprobs("logprobs", self.logprobs)
        self.prompt_logprobs = check_num_logprobs("prompt_logprobs", self.prompt_logprobs)
        self.logit_bias = check_logit_bias(self.logit_bias)
        self.allowed_token_ids = check_token_ids("allowed_token_ids", self.allowed_token_ids)
        self.truncate_prompt_tokens = check_int("truncate_prompt_tokens", self.truncate_prompt_tokens,
                                                 optional=True)
        self.stream_interval = check_int("stream_interval", self.stream_interval, optional=True)
        if not isinstance(self.output_kind, RequestOutputKind):
            raise TypeError(f"output_kind must be a RequestOutputKind, got {self.output_kind!r}")
        if self.extra_args is not None and not isinstance(self.extra_args, dict):
            raise TypeError(f"extra_args must be a dict or None, got {type(self.extra_args).__name__}")
        self._check_structured_outputs()

        if 0 < self.temperature < _MAX_TEMP:
            logger.warning(
                "temperature %s is less than %s, which may cause numerical errors nan or inf in "
                "tensors. We have maxed it out to %s.",
                self.temperature,
                _MAX_TEMP,
                _MAX_TEMP,
            )
            self.temperature = _MAX_TEMP
        check_ranges(self)
        if self.temperature < SAMPLING_EPS:  # greedy: the other truncations are meaningless
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")
        self._all_stop_token_ids = set(self.stop_token_ids)

    def _check_structured_outputs(self) -> None:
        """vLLM's rule: ``guided_decoding`` (deprecated) moves to ``structured_outputs``."""
        if self.guided_decoding is not None:
            warnings.warn("SamplingParams.guided_decoding is deprecated; use structured_outputs",
                          DeprecationWarning, stacklevel=4)
            self.structured_outputs, self.guided_decoding = self.guided_decoding, None
        so = self.structured_outputs
        if so is not None and not isinstance(so, StructuredOutputsParams):
            raise TypeError(f"structured_outputs must be a StructuredOutputsParams, got {type(so).__name__} ({so!r})")

    @classmethod
    def from_optional(cls, **kwargs: Any) -> SamplingParams:
        """vLLM's constructor for optional values (an OpenAI-style request body): None means the default for
        ``n``, the penalties, ``temperature`` and ``top_p``; every other field takes its value as given
        (``max_tokens=None``: up to max_model_len). ``logit_bias`` keys become ints and biases are clamped to
        [-100, 100] (the OpenAI range). Unknown names are a TypeError, as for the constructor."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"SamplingParams.from_optional() got unexpected keyword argument(s): {unknown}")
        for name in _NONE_MEANS_DEFAULT:
            if name in kwargs and kwargs[name] is None:
                del kwargs[name]
        bias = kwargs.get("logit_bias")
        if isinstance(bias, dict):
            kwargs["logit_bias"] = {k: min(100.0, max(-100.0, check_float(f"logit_bias[{k!r}]", v)))
                                    for k, v in bias.items()}
        return cls(**kwargs)

    # ---- engine-side helpers -------------------------------------------------------------------------

    def update_from_tokenizer(self, tokenizer: Any) -> None:
        """Tokenize ``bad_words`` into ``bad_words_token_ids`` and add the tokenizer's EOS to
        ``all_stop_token_ids``. Each bad word is banned both as written at the start of a text and after a
        space (``" " + word``), because BPE tokenizers encode the two differently; the spaced variant is
        kept only when it is a genuinely different token sequence of the same length (vLLM's rule)."""
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            self._all_stop_token_ids.add(eos)
        if not self.bad_words:
            return
        result: list[list[int]] = []
        for word in self.bad_words:
            plain = list(tokenizer.encode(word.lstrip(), add_special_tokens=False))
            if not plain:
                raise ValueError(f"bad_words entries must tokenize to at least one token, got {word!r}.")
            result.append(plain)
            spaced = list(tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
            if spaced and len(spaced) == len(plain) and spaced[0] != plain[0]:
                result.append(spaced)
        self._bad_words_token_ids = result

    def update_from_generation_config(self, generation_config: dict[str, Any],
                                      eos_token_id: int | None = None) -> None:
        """vLLM's per-request merge of the model's EOS ids: ``eos_token_id`` (the tokenizer's) becomes
        ``self.eos_token_id`` unless ``ignore_eos``; the generation config's other ``eos_token_id`` values join
        ``stop_token_ids`` (so they stop with stop_reason = the id) unless ``ignore_eos``. All of them join
        ``all_stop_token_ids``, which ``min_tokens`` bans, ``ignore_eos`` or not."""
        if not self.ignore_eos:
            self._eos_token_id = eos_token_id
        if eos_token_id is not None:
            self._all_stop_token_ids.add(eos_token_id)
        extra = generation_config.get("eos_token_id")
        if extra is None:
            return
        extra = [extra] if isinstance(extra, int) else list(extra)
        extra = [t for t in dict.fromkeys(extra) if t != eos_token_id]
        self._all_stop_token_ids.update(extra)
        if not self.ignore_eos:
            self.stop_token_ids += [t for t in extra if t not in self.stop_token_ids]

    @property
    def eos_token_id(self) -> int | None:
        """The request's EOS id, set by ``update_from_generation_config`` (None under ``ignore_eos``)."""
        return self._eos_token_id

    @property
    def bad_words_token_ids(self) -> list[list[int]] | None:
        """Token id sequences of ``bad_words`` (set by ``update_from_tokenizer``): the sampler bans the last
        id of a sequence when the generated tokens end with the others."""
        return self._bad_words_token_ids

    @property
    def all_stop_token_ids(self) -> set[int]:
        return self._all_stop_token_ids

    @property
    def sampling_type(self) -> SamplingType:
        if self.temperature < SAMPLING_EPS:
            return SamplingType.GREEDY
        return SamplingType.RANDOM if self.seed is None else SamplingType.RANDOM_SEED

    @property
    def is_greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS

    def clone(self) -> SamplingParams:
        return copy.copy(self) if self.skip_clone else copy.deepcopy(self)

    def __repr__(self) -> str:
        return (
            f"SamplingParams(n={self.n}, presence_penalty={self.presence_penalty}, "
            f"frequency_penalty={self.frequency_penalty}, repetition_penalty={self.repetition_penalty}, "
            f"temperature={self.temperature}, top_p={self.top_p}, top_k={self.top_k}, min_p={self.min_p}, "
            f"seed={self.seed}, stop={self.stop}, stop_token_ids={self.stop_token_ids}, "
            f"bad_words={self.bad_words}, include_stop_str_in_output={self.include_stop_str_in_output}, "
            f"ignore_eos={self.ignore_eos}, max_tokens={self.max_tokens}, min_tokens={self.min_tokens}, "
            f"logprobs={self.logprobs}, prompt_logprobs={self.prompt_logprobs}, "
            f"skip_special_tokens={self.skip_special_tokens}, "
            f"spaces_between_special_tokens={self.spaces_between_special_tokens}, "
            f"truncate_prompt_tokens={self.truncate_prompt_tokens}, "
            f"structured_outputs={self.structured_outputs}, extra_args={self.extra_args})"
        )
