"""vLLM's structured-outputs API objects (host side, no jax): ``StructuredOutputsParams`` (one per request, in
``SamplingParams.structured_outputs``), its older name ``GuidedDecodingParams``, and ``StructuredOutputsConfig``
(the ``LLM(structured_outputs_config=...)`` keyword).

Every field is checked in the constructor (types, exactly one constraint kind); whether a schema, regex or
grammar is well formed is checked when the request is added (``jaxllm.structured_outputs.grammar``), before any
device work.
"""

from __future__ import annotations

import dataclasses
import json as _json
import warnings
from typing import Any

# The backends vLLM names; jaxllm implements "guidance" (llguidance), which "auto" selects.
SUPPORTED_BACKENDS = ("auto", "guidance")
VLLM_BACKENDS = ("auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer")
_KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


@dataclasses.dataclass
class StructuredOutputsParams:
    """One request's output constraint (vLLM's ``StructuredOutputsParams``): exactly one of ``json`` (a JSON
    schema as a dict, a JSON string, or a pydantic model class), ``regex``, ``choice`` (a list of strings),
    ``grammar`` (Lark or GBNF/EBNF text), ``json_object=True`` (any JSON object) or ``structural_tag`` (JSON
    text: ``{"structures": [{"begin", "schema", "end"}], "triggers": [...]}``, free text whose tags follow their
    schemas).

    ``disable_any_whitespace``: JSON without free whitespace (compact ``,`` and ``:`` separators);
    ``whitespace_pattern``: a regex for the whitespace allowed between JSON tokens; ``disable_additional_properties``:
    objects take only the properties their schema lists. ``disable_fallback`` is accepted for vLLM compatibility
    and always holds: jaxllm has one backend and never falls back."""

    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_fallback: bool = False
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self) -> None:
        if self.json is not None and hasattr(self.json, "model_json_schema"):  # a pydantic model class
            self.json = self.json.model_json_schema()
        if self.json is not None and not isinstance(self.json, (str, dict)):
            raise TypeError(f"structured_outputs json must be a JSON schema (dict or str), got "
                            f"{type(self.json).__name__} ({self.json!r})")
        for name in ("regex", "grammar", "whitespace_pattern", "structural_tag"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"structured_outputs {name} must be a str, got {type(value).__name__} ({value!r})")
        if self.choice is not None:
            if isinstance(self.choice, str) or not isinstance(self.choice, (list, tuple)):
                raise TypeError(f"structured_outputs choice must be a list of str, got {self.choice!r}")
            if not self.choice or not all(isinstance(c, str) for c in self.choice):
                raise ValueError(f"structured_outputs choice must be a non-empty list of str, got {self.choice!r}")
            self.choice = list(self.choice)
        for name in ("disable_fallback", "disable_any_whitespace", "disable_additional_properties"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"structured_outputs {name} must be a bool, got {getattr(self, name)!r}")
        if self.json_object is not None and not isinstance(self.json_object, bool):
            raise TypeError(f"structured_outputs json_object must be a bool, got {self.json_object!r}")
        count = sum(self._is_set(k) for k in _KINDS)
        if count > 1:
            raise ValueError("You can only use one kind of structured outputs constraint but multiple are "
                             f"specified: {self.__dict__}")
        if count < 1:
            raise ValueError("You must use one kind of structured outputs constraint but none are specified: "
                             f"{self.__dict__}")
        if self.json_object is False:
            raise ValueError("structured_outputs json_object=False is no constraint; leave it None or pass "
                             "json_object=True")

    def _is_set(self, kind: str) -> bool:
        """vLLM counts a constraint as given when it is not None (so ``json_object=False`` counts too)."""
        return getattr(self, kind) is not None

    def all_constraints_none(self) -> bool:
        """Whether no constraint field is set (vLLM's helper)."""
        return not any(self._is_set(k) for k in _KINDS)

    def all_non_structural_tag_constraints_none(self) -> bool:
        """Whether no constraint other than ``structural_tag`` is set (vLLM's helper)."""
        return not any(self._is_set(k) for k in _KINDS if k != "structural_tag")

    @property
    def kind(self) -> str:
        """Which constraint this is: one of json, regex, choice, grammar, json_object, structural_tag."""
        return next(k for k in _KINDS if self._is_set(k))

    def cache_key(self, config: StructuredOutputsConfig) -> tuple:
        """Hashable identity of the grammar this compiles to (the grammar cache's key)."""
        spec = getattr(self, self.kind)
        if isinstance(spec, dict):
            spec = _json.dumps(spec, sort_keys=True)
        elif isinstance(spec, list):
            spec = _json.dumps(spec)
        no_ws = self.disable_any_whitespace or config.disable_any_whitespace
        no_extra = self.disable_additional_properties or config.disable_additional_properties
        return self.kind, spec, no_ws, no_extra, self.whitespace_pattern

    @classmethod
    def from_optional(cls, json: Any = None, regex: str | None = None, choice: list[str] | None = None,
                      grammar: str | None = None, json_object: bool | None = None, **kwargs: Any):
        """None when no constraint is given, else the params (vLLM's helper for optional request fields)."""
        if all(v is None for v in (json, regex, choice, grammar, json_object)):
            return None
        return cls(json=json, regex=regex, choice=choice, grammar=grammar, json_object=json_object, **kwargs)


@dataclasses.dataclass
class GuidedDecodingParams(StructuredOutputsParams):
    """The older name of ``StructuredOutputsParams`` (deprecated in vLLM; same fields and behaviour), with its
    per-request ``backend`` (TRL passes it): None, "auto" or "guidance", the one backend jaxllm has; vLLM's
    other backends are a ValueError naming them."""

    backend: str | None = None

    def __post_init__(self) -> None:
        warnings.warn("GuidedDecodingParams is deprecated; use StructuredOutputsParams instead",
                      DeprecationWarning, stacklevel=3)
        if self.backend is not None and self.backend not in SUPPORTED_BACKENDS:
            raise ValueError(f"guided decoding backend={self.backend!r} is not available; jaxllm implements "
                             f"{SUPPORTED_BACKENDS} (llguidance)")
        super().__post_init__()


@dataclasses.dataclass
class StructuredOutputsConfig:
    """``LLM(structured_outputs_config=...)`` (vLLM's ``StructuredOutputsConfig``; a dict of these fields or
    an instance). ``backend``: "auto" or "guidance" (llguidance; see docs/structured_outputs.md for why);
    ``disable_any_whitespace`` / ``disable_additional_properties``: engine-wide defaults of the per-request
    options; ``disable_fallback`` always holds (one backend); ``reasoning_parser`` and
    ``reasoning_parser_plugin`` are not supported yet, so ``enable_in_reasoning`` (constrain the reasoning too)
    has no reasoning to act on and only its type is checked, as in vLLM without a parser."""

    backend: str = "auto"
    disable_fallback: bool = False
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    reasoning_parser: str = ""
    reasoning_parser_plugin: str = ""
    enable_in_reasoning: bool = False

    def __post_init__(self) -> None:
        if self.backend not in SUPPORTED_BACKENDS:
            known = "a vLLM backend jaxllm does not implement" if self.backend in VLLM_BACKENDS else "unknown"
            raise ValueError(f"structured_outputs_config backend={self.backend!r} is {known}; choose one of "
                             f"{SUPPORTED_BACKENDS} (llguidance)")
        for name in ("disable_fallback", "disable_any_whitespace", "disable_additional_properties",
                     "enable_in_reasoning"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"structured_outputs_config {name} must be a bool, got {getattr(self, name)!r}")
        for name in ("reasoning_parser", "reasoning_parser_plugin"):
            if getattr(self, name):
                raise ValueError(f"structured_outputs_config {name}={getattr(self, name)!r} is not supported yet")

    @classmethod
    def coerce(cls, value: Any) -> StructuredOutputsConfig:
        """None, a dict of fields or an instance -> an instance; unknown keys are a TypeError naming them."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"structured_outputs_config must be a dict or StructuredOutputsConfig, got "
                            f"{type(value).__name__} ({value!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise TypeError(f"structured_outputs_config got unknown key(s) {unknown}; supported: {sorted(names)}")
        return cls(**value)
