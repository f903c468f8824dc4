"""A request's ``StructuredOutputsParams`` -> llguidance's grammar text (host side, no jax).

The same translation as vLLM's "guidance" backend: JSON schemas (with the whitespace and
``additionalProperties`` options), regexes, choices, grammars (Lark, or GBNF/EBNF that llguidance converts to
Lark) and structural tags (vLLM's ``{"structures": [{"begin", "schema", "end"}], "triggers": [...]}`` form:
free text in which each trigger starts a tag whose body follows its JSON schema).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Any

from .params import StructuredOutputsConfig, StructuredOutputsParams

# keywords whose value maps names to sub-schemas, and keywords whose value is a sub-schema (or a list of them)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_SUBSCHEMAS = ("additionalProperties", "unevaluatedProperties", "propertyNames", "contains", "additionalItems",
               "unevaluatedItems", "not", "if", "then", "else", "contentSchema", "items", "prefixItems", "allOf",
               "anyOf", "oneOf")


# a GBNF / EBNF rule definition (``name ::= ...``) at the start of a line; Lark rules use ``name:``
_GBNF_RULE = re.compile(r"(?m)^\s*[A-Za-z_][\w-]*\s*::=")
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (\S+)")

logger = logging.getLogger("jaxllm")


def _llguidance():
    try:
        import llguidance
    except ImportError as e:  # a declared dependency; only a broken install lands here
        raise ValueError("structured outputs need the llguidance package: pip install llguidance") from e
    return llguidance


def _subschemas(schema: Any):
    """Every schema nested in ``schema`` (a dict or list), itself included, visiting only real sub-schema
    positions (never ``enum``, ``const`` or ``default`` values, nor a property that happens to be called
    "properties"); children before their parent."""
    if isinstance(schema, list):
        for item in schema:
            yield from _subschemas(item)
        return
    if not isinstance(schema, dict):
        return
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for sub in schema[key].values():
                yield from _subschemas(sub)
    for key in _SUBSCHEMAS:
        if isinstance(schema.get(key), (dict, list)):
            yield from _subschemas(schema[key])
    yield schema


def _close_objects(schema: Any) -> None:
    """In place: ``additionalProperties: false`` on every schema that lists ``properties`` or
    ``patternProperties`` and does not set it (vLLM's ``disable_additional_properties``)."""
    for sub in _subschemas(schema):
        if "additionalProperties" not in sub and (isinstance(sub.get("properties"), dict)
                                                  or isinstance(sub.get("patternProperties"), dict)):
            sub["additionalProperties"] = False


def _schema_grammar(schema: Any, options: dict) -> str:
    """llguidance's grammar for ``schema``. A string ``format`` llguidance does not implement (pydantic's
    "path", "binary", "password", ...) is dropped, as JSON Schema treats formats as annotations a validator
    need not know: the output is still a string that validates against the schema."""
    llg = _llguidance()
    text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=options)
    for _ in range(64):  # one pass per unknown format name
        unknown = _UNKNOWN_FORMAT.search(llg.LLMatcher.validate_grammar(text) or "") if '"format"' in text else None
        if unknown is None:
            return text
        logger.warning("structured outputs: JSON schema format %r is not enforced (llguidance does not implement "
                       "it)", unknown.group(1))
        for sub in _subschemas(schema):
            if sub.get("format") == unknown.group(1):
                del sub["format"]
        text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=options)
    return text


def _load_schema(spec: Any, what: str) -> Any:
    if isinstance(spec, str):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"structured_outputs {what} is not valid JSON ({e}): {spec!r}") from None
    return copy.deepcopy(spec)


def json_schema_text(schema: Any, params: StructuredOutputsParams, config: StructuredOutputsConfig,
                     what: str = "json", close: bool = True) -> str:
    """llguidance's grammar for a JSON schema (a dict or JSON text) under the request's and engine's options
    (``close=False``: never add ``additionalProperties: false``)."""
    schema = _load_schema(schema, what)
    if schema is True:  # JSON Schema's "any value"
        schema = {}
    if not isinstance(schema, dict):  # a bad value of the spec's text: ValueError, as every malformed spec
        message = f"structured_outputs {what} must be a JSON schema object (or true), got {schema!r}"
        raise ValueError(message)  # noqa: TRY004
    if close and (params.disable_additional_properties or config.disable_additional_properties):
        _close_objects(schema)
    options: dict[str, Any] = {
        "whitespace_flexible": not (params.disable_any_whitespace or config.disable_any_whitespace)}
    if params.whitespace_pattern is not None:
        options["whitespace_pattern"] = params.whitespace_pattern
    return _schema_grammar(schema, options)


def structural_tag_text(params: StructuredOutputsParams, config: StructuredOutputsConfig) -> str:
    """vLLM's structural tag (JSON text): ``structures`` [{"begin", "schema", "end"}], ``triggers`` [str]; each
    structure's ``begin`` must start with one of the triggers."""
    spec = _load_schema(params.structural_tag, "structural_tag")
    well_formed = isinstance(spec, dict) and all(isinstance(spec.get(k), list) for k in ("structures", "triggers"))
    if not well_formed:
        raise ValueError("structured_outputs structural_tag must be a JSON object with lists 'structures' and "
                         "'triggers'")
    llg, tags = _llguidance(), []
    for s in spec["structures"]:
        if not isinstance(s, dict) or not {"begin", "schema", "end"} <= set(s):
            raise ValueError(f"structured_outputs structural_tag structure {s!r} needs 'begin', 'schema', 'end'")
        trigger = next((t for t in spec["triggers"] if s["begin"].startswith(t)), None)
        if trigger is None:
            raise ValueError(f"structured_outputs structural_tag begin {s['begin']!r} starts with none of the "
                             f"triggers {spec['triggers']}")
        tags.append(llg.StructTag(trigger=trigger, begin=s["begin"], end=s["end"],
                                  grammar=json_schema_text(s["schema"], params, config, "structural_tag schema")))
    if not tags:
        raise ValueError("structured_outputs structural_tag has no structures")
    return llg.StructTag.to_grammar(tags)


def grammar_text(params: StructuredOutputsParams, config: StructuredOutputsConfig) -> str:
    """llguidance's grammar text for ``params``; raises ValueError for a malformed spec."""
    llg = _llguidance()
    kind = params.kind
    if kind == "json":
        return json_schema_text(params.json, params, config)
    if kind == "json_object":  # any object: nothing to close (as vLLM)
        return json_schema_text({"type": "object"}, params, config, close=False)
    if kind == "structural_tag":
        return structural_tag_text(params, config)
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(params.regex)
    if kind == "choice":
        return llg.grammar_from("choice", params.choice)
    return grammar_format_text(params.grammar)


def grammar_format_text(grammar: str) -> str:
    """A GBNF / EBNF grammar (xgrammar's and llama.cpp's ``root ::= ...``) is converted to Lark; anything else is
    Lark (vLLM's guidance format, including ``?rule:`` inlined rules, which llguidance's own format guess would
    take for GBNF)."""
    llg = _llguidance()
    return llg.grammar_from("gbnf" if _GBNF_RULE.search(grammar) else "lark", grammar)
