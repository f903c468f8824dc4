"""docs/vllm_compat.md stays honest: every "supported" / "differs" constructor keyword validates with its example
value, every "not yet" one is a ValueError naming it, and every name of the tables that says "supported" exists."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.engine_args import EngineArgs
from jaxllm.unsupported_args import UNSUPPORTED

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "vllm_compat.md"
_ROW = re.compile(r"^\| `(\w+)` \| (supported|differs|not yet) \|(?: `(.*)` \|| \|)?")


def _section(title: str) -> list[tuple[str, str, str | None]]:
    text = DOC.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(3)))
    assert rows, title
    return rows


CONSTRUCTOR = _section("`LLM(...)` / `EngineArgs` keywords")


def _asking_value(off: tuple):
    """A value of an unsupported keyword that asks for the feature."""
    if False in off:
        return True
    numbers = [v for v in off if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if numbers:
        return max(numbers) + 1
    return "something"


@pytest.mark.parametrize("name, status, example", [r for r in CONSTRUCTOR if r[1] != "not yet"])
def test_supported_keyword_validates(name, status, example):
    kwargs = {} if example is None else {name: ast.literal_eval(example)}
    args = EngineArgs.from_kwargs(kwargs)
    if kwargs and name in EngineArgs.__dataclass_fields__ and name != "compilation_config":
        assert getattr(args, name) == kwargs[name]


@pytest.mark.parametrize("name", [r[0] for r in CONSTRUCTOR if r[1] == "not yet"])
def test_not_yet_keyword_is_a_value_error_naming_it(name):
    off, _ = UNSUPPORTED[name]
    with pytest.raises(ValueError, match=rf"^{name}="):
        EngineArgs.from_kwargs({name: _asking_value(off)})


def test_every_keyword_is_in_the_table():
    listed = {r[0] for r in CONSTRUCTOR}
    jaxllm_only = {"compilation_cache_dir", "attention_decode_splits", "attention_fp8_dot", "quant_matmul_impl",
                   "int4_kernel_variant", "fp8_activations", "load_inflight_bytes", "moe_matmul_impl",
                   "host_prefix_cache", "allow_long_max_model_len", "background_compile", "gguf_cache_dir"}
    assert {f.name for f in dataclasses.fields(EngineArgs)} - jaxllm_only <= listed
    assert set(UNSUPPORTED) <= listed


def test_method_and_field_status_matches_the_code():
    """Both ways: a "supported" method / field exists, a "not yet" one does not (update the table as they land)."""
    for name, status, _ in _section("`LLM` methods"):
        assert callable(getattr(LLM, name, None)) == (status != "not yet"), name
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    for name, status, _ in _section("`SamplingParams` fields"):
        assert (name in fields) == (status != "not yet"), name
