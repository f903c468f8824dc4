"""Structured outputs against vLLM's documented API, without a model: the exactly-one rule, every field's
accepted forms, the backend names, the engine-wide config keys, the grammar text each spec becomes (GBNF,
Lark, structural tags, ``disable_additional_properties``) and the ValueError of every malformed spec."""

from __future__ import annotations

import json

import pytest
from engine.bpe_tokenizer import bpe_tokenizer

from jaxllm import SamplingParams
from jaxllm.structured_outputs import GuidedDecodingParams, StructuredOutputsConfig, StructuredOutputsParams
from jaxllm.structured_outputs.grammar import GrammarCompiler
from jaxllm.structured_outputs.spec_text import grammar_text

S = StructuredOutputsParams
TAG = {"structures": [{"begin": "<f=add>", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                       "end": "</f>"}], "triggers": ["<f="]}

LARK_SQL = """?start: select_statement
?select_statement: "SELECT " column_list " FROM " table_name
?column_list: column_name ("," column_name)*
?table_name: identifier
?column_name: identifier
?identifier: /[a-zA-Z_][a-zA-Z0-9_]*/"""


@pytest.fixture(scope="module")
def compiler():
    return GrammarCompiler(bpe_tokenizer(), 448, (0,))


def _schema(params: StructuredOutputsParams, config: StructuredOutputsConfig | None = None) -> dict:
    return json.loads(grammar_text(params, config or StructuredOutputsConfig()))["grammars"][0]["json_schema"]


def test_exactly_one_rule_counts_fields_that_are_not_none():
    with pytest.raises(ValueError, match="multiple are specified"):
        S(json={"type": "object"}, json_object=False)
    with pytest.raises(ValueError, match="multiple are specified"):
        S(choice=["a"], structural_tag=json.dumps(TAG))
    with pytest.raises(ValueError, match="json_object=False is no constraint"):
        S(json_object=False)
    with pytest.raises(ValueError, match="none are specified"), pytest.warns(DeprecationWarning):
        GuidedDecodingParams(disable_any_whitespace=True)


def test_every_constraint_kind_and_form():
    pydantic = pytest.importorskip("pydantic")

    class Answer(pydantic.BaseModel):
        name: str
        score: int

    assert S(json=Answer).json == Answer.model_json_schema()
    assert S(json='{"type": "integer"}').kind == "json"
    assert _schema(S(json="true"))["x-guidance"]  # JSON Schema's "any value"
    assert S(choice=("a", "b")).choice == ["a", "b"]
    tag = S(structural_tag=json.dumps(TAG))
    assert tag.kind == "structural_tag" and not tag.all_constraints_none()
    assert tag.all_non_structural_tag_constraints_none() and not S(regex="a").all_non_structural_tag_constraints_none()
    with pytest.warns(DeprecationWarning):
        sp = SamplingParams(guided_decoding=GuidedDecodingParams(regex="[ab]+"))
    assert sp.structured_outputs.regex == "[ab]+" and sp.guided_decoding is None
    with pytest.raises(TypeError, match="choice must be a list of str"):
        S(choice="ab")
    with pytest.warns(DeprecationWarning):  # the older name's per-request backend (as TRL passes it)
        older = GuidedDecodingParams(backend="guidance", regex="a")
    assert older.backend == "guidance" and older.kind == "regex"
    with pytest.raises(ValueError, match="backend='xgrammar' is not available"), pytest.warns(DeprecationWarning):
        GuidedDecodingParams(backend="xgrammar", regex="a")


@pytest.mark.parametrize("backend", ["xgrammar", "outlines", "lm-format-enforcer", "nope"])
def test_backends_jaxllm_does_not_implement_are_a_value_error_naming_them(backend):
    with pytest.raises(ValueError, match=f"backend='{backend}'"):
        StructuredOutputsConfig.coerce({"backend": backend})


def test_config_takes_vllms_keys():
    from jaxllm.config import StructuredOutputsConfig as from_config  # vLLM's import path (vllm.config)

    assert from_config is StructuredOutputsConfig
    for backend in ("auto", "guidance"):
        assert StructuredOutputsConfig.coerce({"backend": backend, "disable_fallback": True}).backend == backend
    assert StructuredOutputsConfig.coerce({"enable_in_reasoning": False, "reasoning_parser_plugin": ""})
    with pytest.raises(ValueError, match="reasoning_parser_plugin='my.py' is not supported"):
        StructuredOutputsConfig(reasoning_parser_plugin="my.py")
    with pytest.raises(TypeError, match="unknown key"):
        StructuredOutputsConfig.coerce({"guided_backend": "auto"})


def test_disable_additional_properties_closes_only_real_object_schemas():
    schema = {"type": "object", "properties": {"properties": {"type": "object", "properties": {
        "x": {"type": "integer"}}}, "free": {"type": "object"}}, "enum": [{"properties": {}}],
        "$defs": {"p": {"properties": {"y": {"type": "string"}}}}}
    closed = _schema(S(json=schema, disable_additional_properties=True))
    assert closed["additionalProperties"] is False
    assert closed["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["properties"]["properties"]  # a map, not a schema
    assert "additionalProperties" not in closed["properties"]["free"]  # no properties listed: any object
    assert closed["enum"] == [{"properties": {}}] and closed["$defs"]["p"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the request's schema is not modified
    engine_wide = StructuredOutputsConfig(disable_additional_properties=True)
    assert _schema(S(json=schema), engine_wide)["additionalProperties"] is False
    assert "additionalProperties" not in _schema(S(json_object=True), engine_wide)  # any object stays any


def test_whitespace_options_reach_the_grammar():
    assert _schema(S(json={"type": "object"}))["x-guidance"]["whitespace_flexible"] is True
    assert _schema(S(json={"type": "object"}, disable_any_whitespace=True))["x-guidance"]["whitespace_flexible"] \
        is False
    assert _schema(S(json_object=True), StructuredOutputsConfig(disable_any_whitespace=True))[
        "x-guidance"]["whitespace_flexible"] is False
    assert _schema(S(json={"type": "object"}, whitespace_pattern="[ ]?"))["x-guidance"]["whitespace_pattern"] == "[ ]?"


@pytest.mark.parametrize("grammar", [
    'root ::= "yes" | "no"',  # xgrammar / llama.cpp GBNF
    'root ::= item ("," item)*\nitem ::= [a-z]+',
    'start: "yes" | "no"',  # Lark (vLLM's guidance backend)
    'start: item ("," item)*\nitem: /[a-z]+/',
    LARK_SQL,  # vLLM's documented Lark example (``?rule:`` inlined rules)
    ('# xgrammar EBNF: comments, negated classes, bounded repeats\nroot ::= "[" item ("," item){0,3} "]"\n'
    'item ::= "\\"" [^"\\\\]* "\\"" | [0-9]{1,3} | "null"'),
])
def test_gbnf_and_lark_grammars_are_accepted(compiler, grammar):
    state = compiler.new_state("g", S(grammar=grammar))
    state.wait(60)
    assert not state.matcher.is_error()


def test_lark_grammar_with_inlined_rules_constrains_the_text(compiler):
    tok = compiler.tokenizer
    for text, accepted in (("SELECT a,b FROM t", True), ("SELECT a b", False)):
        state = compiler.new_state("l", S(grammar=LARK_SQL))
        state.wait(60)
        matcher = state.matcher.deep_copy()
        ok = all(matcher.consume_token(t) for t in tok.encode(text, add_special_tokens=False))
        assert ok == accepted and (not ok or matcher.is_accepting()), text


def test_structural_tag_is_vllms_guidance_form(compiler):
    state = compiler.new_state("t", S(structural_tag=json.dumps(TAG)))
    state.wait(60)
    assert not state.matcher.is_error()


@pytest.mark.parametrize(("params", "message"), [
    (S(json={"type": "foo"}), "invalid structured_outputs json .*Invalid type"),
    (S(json='{"type": '), "not valid JSON"),
    (S(json="[1, 2]"), "must be a JSON schema object"),
    (S(json="false"), "must be a JSON schema object"),
    (S(json={"$ref": "#/$defs/nope"}), "does not exist"),
    (S(json={"type": "array", "minItems": 3, "maxItems": 1}), "Unsatisfiable"),
    (S(json={"type": "object"}, whitespace_pattern="(("), "unclosed group"),
    (S(regex="a{2"), "invalid structured_outputs regex 'a\\{2'"),
    (S(grammar="root ::= undefined_rule"), "invalid structured_outputs grammar .*undefined_rule"),
    (S(grammar=""), "invalid structured_outputs grammar ''"),
    (S(structural_tag='{"type": "structural_tag", "format": {}}'), "lists 'structures' and 'triggers'"),
    (S(structural_tag=json.dumps({"structures": [{"begin": "<x>", "schema": {}, "end": "</x>"}],
                                  "triggers": ["<f"]})), "starts with none of the triggers"),
    (S(structural_tag=json.dumps({"structures": [{"begin": "<f>"}], "triggers": ["<f"]})), "needs 'begin'"),
])
def test_malformed_specs_are_a_value_error_naming_request_and_spec(compiler, params, message):
    with pytest.raises(ValueError, match=message) as info:
        compiler.new_state("req-7", params)
    assert "request 'req-7'" in str(info.value)


def test_formats_llguidance_does_not_implement_are_annotations(compiler):
    """pydantic writes formats such as "path", "binary" and "password"; JSON Schema lets a validator ignore a
    format it does not know, so these compile (as any string) while known formats stay enforced."""
    schema = {"type": "object", "properties": {"p": {"type": "string", "format": "path"},
                                               "items": {"type": "array", "items": {"type": "string",
                                                                                    "format": "binary"}},
                                               "mail": {"type": "string", "format": "email"}}}
    original = json.dumps(schema)
    state = compiler.new_state("f", S(json=schema))
    state.wait(60)
    assert not state.matcher.is_error() and json.dumps(schema) == original  # the request's schema is unchanged
    compiled = _schema(S(json=schema))
    assert "format" not in compiled["properties"]["p"] and "format" not in compiled["properties"]["items"]["items"]
    assert compiled["properties"]["mail"]["format"] == "email"
    matcher = state.matcher.deep_copy()
    tok = compiler.tokenizer
    assert not all(matcher.consume_token(t) for t in tok.encode('{"mail": "no at sign"', add_special_tokens=False))
