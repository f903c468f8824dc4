"""``SpeculativeConfig``: vLLM's ``speculative_config`` dict, validated (plain Python, no jax)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

METHODS = ("ngram", "draft_model", "eagle")
_DRAFT_RUNNER_METHODS = ("draft_model", "eagle")  # methods whose drafts come from a model on the device
_KEYS = ("method", "model", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min",
         "disable_by_batch_size")
_NGRAM_MODELS = ("ngram", "[ngram]")  # vLLM's older spelling: model="[ngram]" with no method


@dataclasses.dataclass(frozen=True)
class SpeculativeConfig:
    """``method``: "ngram" (prompt lookup), "draft_model" (a smaller model of the same vocabulary, ``model``:
    its checkpoint folder or hub id; vLLM infers "draft_model" when only ``model`` is given) or "eagle" (an
    EAGLE-1 head for a Llama-family target, ``model``: its checkpoint; jaxllm.spec_decode.eagle_head).
    ``num_speculative_tokens`` k: draft tokens proposed per step. ``prompt_lookup_max`` / ``prompt_lookup_min``
    (n-gram only): the longest / shortest suffix n-gram matched (vLLM's defaults: one given -> the other equals
    it; neither -> both 5).
    ``disable_by_batch_size``: a step speculates only while at most this many sequences are running (vLLM's
    key); a large batch is compute-bound, where verifying k extra tokens per sequence costs more than the
    accepted tokens save. None (the default): the automatic rule decides per step and per request from the
    measured acceptance and the step's roofline cost (``jaxllm.spec_decode.auto``)."""

    method: str
    num_speculative_tokens: int
    prompt_lookup_max: int | None
    prompt_lookup_min: int | None
    disable_by_batch_size: int | None = None
    model: str | None = None

    @classmethod
    def from_dict(cls, spec: Any) -> SpeculativeConfig | None:
        """``LLM(speculative_config=...)``: None, or a dict with vLLM's keys. Unknown keys and methods are a
        ValueError naming them."""
        if spec is None:
            return None
        if isinstance(spec, SpeculativeConfig):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"speculative_config must be a dict, got {type(spec).__name__} ({spec!r})")
        unknown = sorted(set(spec) - set(_KEYS))
        if unknown:
            raise ValueError(f"speculative_config keys {unknown} are not supported; supported keys: {list(_KEYS)}")
        method, model = _method_and_model(spec)
        k = spec.get("num_speculative_tokens")
        _check_int("num_speculative_tokens", k)
        disable = spec.get("disable_by_batch_size")
        if disable is not None:
            _check_int("disable_by_batch_size", disable)
        if method in _DRAFT_RUNNER_METHODS:
            lookup = sorted(key for key in ("prompt_lookup_max", "prompt_lookup_min") if spec.get(key) is not None)
            if lookup:
                raise ValueError(f"speculative_config {lookup} apply to method='ngram', not {method!r}")
            return cls(method, k, None, None, disable, model)
        lo, hi = spec.get("prompt_lookup_min"), spec.get("prompt_lookup_max")
        if lo is None and hi is None:  # vLLM's ngram defaults
            lo, hi = 5, 5
        lo = hi if lo is None else lo
        hi = lo if hi is None else hi
        _check_int("prompt_lookup_min", lo)
        _check_int("prompt_lookup_max", hi)
        if lo > hi:
            raise ValueError(f"speculative_config prompt_lookup_min={lo} must be <= prompt_lookup_max={hi}")
        return cls(method, k, hi, lo, disable)

    @property
    def uses_draft_runner(self) -> bool:
        """Whether drafts come from a model on the device (a draft model or an EAGLE head: DraftRunner)."""
        return self.method in _DRAFT_RUNNER_METHODS

    @property
    def auto(self) -> bool:
        """Whether the automatic rule decides which steps and requests speculate (no ``disable_by_batch_size``)."""
        return self.disable_by_batch_size is None


def _method_and_model(spec: dict) -> tuple[str, str | None]:
    """(method, draft model path) with vLLM's inference: no method but a ``model`` -> "draft_model" (or "ngram"
    for model="[ngram]")."""
    method, model = spec.get("method"), spec.get("model")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if model is not None and not (isinstance(model, str) and model):
        raise ValueError(f"speculative_config model={model!r} must be a checkpoint folder or hub id (a str)")
    if method is None and model is not None:
        method = "ngram" if model in _NGRAM_MODELS else "draft_model"
    if method == "eagle3":
        raise ValueError("speculative_config method='eagle3' is not supported; supported: "
                         f"{list(METHODS)} (method='eagle' takes EAGLE-1 heads)")
    if method not in METHODS:
        raise ValueError(f"speculative_config method={method!r} is not supported; supported: {list(METHODS)}")
    if method == "ngram":
        if model not in (None, *_NGRAM_MODELS):
            raise ValueError(f"speculative_config model={model!r} does not apply to method='ngram' (drafts come "
                             "from the prompt); use method='draft_model' for a draft model")
        return method, None
    if model is None and method == "eagle":
        raise ValueError("speculative_config method='eagle' needs 'model': the EAGLE head's checkpoint")
    if model is None:
        raise ValueError("speculative_config method='draft_model' needs 'model': the draft checkpoint (a smaller "
                         "model with the target's vocabulary)")
    return method, model


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"speculative_config {name}={value!r} must be a positive int")
