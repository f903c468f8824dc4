"""``SpeculativeConfig``: vLLM's ``speculative_config`` dict, validated (plain Python, no jax)."""

from __future__ import annotations

import dataclasses
from typing import Any

METHODS = ("ngram",)
_KEYS = ("method", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min", "disable_by_batch_size")


@dataclasses.dataclass(frozen=True)
class SpeculativeConfig:
    """``method``: "ngram" (prompt lookup). ``num_speculative_tokens`` k: draft tokens proposed per step.
    ``prompt_lookup_max`` / ``prompt_lookup_min``: the longest / shortest suffix n-gram matched (vLLM's
    defaults: one given -> the other equals it; neither -> both 5).
    ``disable_by_batch_size``: a step speculates only while at most this many sequences are running (vLLM's
    key; None = always); a large batch is compute-bound, where verifying k extra tokens per sequence costs
    more than the accepted tokens save."""

    method: str
    num_speculative_tokens: int
    prompt_lookup_max: int
    prompt_lookup_min: int
    disable_by_batch_size: int | None = None

    @classmethod
    def from_dict(cls, spec: Any) -> SpeculativeConfig | None:
        """``LLM(speculative_config=...)``: None, or a dict with vLLM's keys. Unknown keys and methods other
        than "ngram" are a ValueError naming them."""
        if spec is None:
            return None
        if isinstance(spec, SpeculativeConfig):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"speculative_config must be a dict, got {type(spec).__name__} ({spec!r})")
        unknown = sorted(set(spec) - set(_KEYS))
        if unknown:
            raise ValueError(f"speculative_config keys {unknown} are not supported; supported keys: {list(_KEYS)}")
        method = spec.get("method")
        if method not in METHODS:
            raise ValueError(f"speculative_config method={method!r} is not supported; supported: {list(METHODS)}")
        k = spec.get("num_speculative_tokens")
        _check_int("num_speculative_tokens", k)
        lo, hi = spec.get("prompt_lookup_min"), spec.get("prompt_lookup_max")
        if lo is None and hi is None:  # vLLM's ngram defaults
            lo, hi = 5, 5
        lo = hi if lo is None else lo
        hi = lo if hi is None else hi
        _check_int("prompt_lookup_min", lo)
        _check_int("prompt_lookup_max", hi)
        if lo > hi:
            raise ValueError(f"speculative_config prompt_lookup_min={lo} must be <= prompt_lookup_max={hi}")
        disable = spec.get("disable_by_batch_size")
        if disable is not None:
            _check_int("disable_by_batch_size", disable)
        return cls(method, k, hi, lo, disable)

    def speculates(self, num_running: int) -> bool:
        """Whether a step with ``num_running`` running sequences speculates (``disable_by_batch_size``)."""
        return self.disable_by_batch_size is None or num_running <= self.disable_by_batch_size


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"speculative_config {name}={value!r} must be a positive int")
