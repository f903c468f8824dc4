"""``BeamSearchParams``: the parameters of ``LLM.beam_search`` (vLLM's class). Beam search is driven by
``jaxllm.beam_search`` on top of one-token ``SamplingParams`` requests, so its parameters are a small class of
their own rather than fields of ``SamplingParams``; ``jaxllm.sampling_params`` re-exports it (vLLM's import path).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxllm.sampling_checks import check_bool, check_float, check_int


@dataclasses.dataclass
class BeamSearchParams:
    """Beam search parameters for ``LLM.beam_search`` (vLLM's ``BeamSearchParams``; ``beam_width`` and
    ``max_tokens`` may be passed positionally, as vLLM allows).

    ``temperature`` is the temperature of the one-token step requests (vLLM's meaning): 0 scores candidates
    from the raw logprobs only; above 0 each beam's sampled token joins its top ``2 * beam_width``
    candidates. ``include_stop_str_in_output`` keeps the EOS that ended a beam in its ``text`` (as
    ``SamplingParams.include_stop_str_in_output`` does for generate; a special EOS still decodes to nothing).
    ``structured_outputs`` is not supported yet and must stay None.
    """

    beam_width: int
    max_tokens: int
    ignore_eos: bool = False
    temperature: float = 0.0
    length_penalty: float = 1.0
    include_stop_str_in_output: bool = False
    structured_outputs: Any = None

    def __post_init__(self) -> None:
        self.beam_width = check_int("beam_width", self.beam_width)
        self.max_tokens = check_int("max_tokens", self.max_tokens)
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {self.beam_width}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        self.ignore_eos = check_bool("ignore_eos", self.ignore_eos)
        self.include_stop_str_in_output = check_bool("include_stop_str_in_output", self.include_stop_str_in_output)
        self.temperature = check_float("temperature", self.temperature)
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")
        self.length_penalty = check_float("length_penalty", self.length_penalty)
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}.")
        if self.structured_outputs is not None:
            raise ValueError("BeamSearchParams.structured_outputs is not supported yet; leave it None")
