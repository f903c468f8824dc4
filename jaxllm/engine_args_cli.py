"""``EngineArgs`` on the command line: vLLM's ``EngineArgs.add_cli_args(parser)`` / ``from_cli_args(args)``.

Every ``EngineArgs`` field becomes ``--field-name`` with the field's default, so ``LLM(**vars(parser.parse_args()))``
(the pattern of vLLM's offline examples) builds the same engine as ``LLM()`` with those flags as keywords.
Types follow the field annotations: booleans take ``--x`` / ``--no-x``; dict-valued options (``--hf-overrides``,
``--speculative-config``, ...) take JSON; optional numbers take ``None`` to mean "derive it". The values are
validated by ``EngineArgs.from_kwargs`` as for keywords, so a bad one is the same ValueError naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

# Fields whose annotation admits a dict or another object: a JSON value on the command line (a plain string,
# such as ``--dtype bfloat16``, stays a string).
_JSON_TYPES = ("dict", "Any")


def _optional(parse):
    """``parse``, except that the word ``None`` means the field's "derive a default" value."""

    def parse_optional(text: str):
        return None if text in ("None", "none") else parse(text)

    parse_optional.__name__ = parse.__name__  # argparse names the type in its error message
    return parse_optional


def json_or_str(text: str) -> Any:
    """A JSON value (``{"rope_type": "yarn"}``, ``3``, ``true``) or, when ``text`` is not JSON, the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _argument_kwargs(field: dataclasses.Field) -> dict[str, Any]:
    """``add_argument`` keywords for one EngineArgs field, from its annotation string and default."""
    kind = str(field.type).replace(" ", "")
    parts = set(kind.split("|"))
    optional = "None" in parts
    default = field.default
    if parts <= {"bool", "None"}:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if any(t in kind for t in _JSON_TYPES) or parts - {"None"} == {"bool", "str"}:
        return {"type": json_or_str, "default": default, "metavar": "JSON"}
    if "list[str]" in parts:
        return {"nargs": "+", "default": default}
    for name, parse in (("int", int), ("float", float), ("str", str)):
        if name in parts:
            return {"type": _optional(parse) if optional else parse, "default": default}
    return {"type": json_or_str, "default": default}


def add_cli_args(parser, fields) -> Any:
    """Add ``--field-name`` for each of ``fields`` to ``parser`` (an ArgumentParser or one of its argument
    groups) and return ``parser``, as vLLM's ``EngineArgs.add_cli_args``."""
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, dest=field.name, **_argument_kwargs(field))
    return parser


def from_cli_args(cls, args: argparse.Namespace):
    """``cls`` (EngineArgs) from a parsed namespace: its fields' values (and vLLM's deprecated ``task``, which
    older scripts set with ``parser.set_defaults``), validated as ``LLM``'s keywords; the namespace's other
    entries (the script's own flags) are left out."""
    names = {f.name for f in dataclasses.fields(cls)} | {"task"}
    return cls.from_kwargs({k: v for k, v in vars(args).items() if k in names})
