"""Careless and hostile inputs of issue #32, one explicit case each: every one is a ValueError / TypeError before
any device work that names the prompt's, conversation's or message's index (or the parameter), and the LLM is
left clean (no request behind, the next call unchanged)."""

from __future__ import annotations

import pytest

from jaxllm import SamplingParams, StructuredOutputsParams

GREEDY = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
OK = {"prompt_token_ids": [5, 6, 7]}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def reference(llama_llm):
    return llama_llm.generate([OK], GREEDY, use_tqdm=False)[0].outputs[0].token_ids


def _clean(llm, reference):
    assert not llm.llm_engine.has_unfinished_requests() and not llm.llm_engine._steps
    assert llm.generate([OK], GREEDY, use_tqdm=False)[0].outputs[0].token_ids == reference


@pytest.mark.parametrize("prompt,params,error,match", [
    ({"prompt_token_ids": [1, 10**6]}, GREEDY, ValueError, "prompt 1: Token id 1000000 is out of vocabulary"),
    ({"prompt_token_ids": [-3]}, GREEDY, ValueError, "prompt 1: Token id -3 is out of vocabulary"),
    ("bad \udcff text", GREEDY, ValueError, "prompt 1 is not valid Unicode text"),
    ("x", SamplingParams(stop_token_ids=[10**6]), ValueError, "prompt 1: .*stop_token_ids"),
    # every allowed id is banned at the first step: nothing could be sampled
    ("x", SamplingParams(allowed_token_ids=[7], stop_token_ids=[7], min_tokens=1), ValueError,
     "prompt 1: no token can be sampled"),
    ("x", SamplingParams(allowed_token_ids=[0], min_tokens=2), ValueError, "prompt 1: no token can be sampled"),
])
def test_bad_prompt_names_its_index(llama_llm, reference, prompt, params, error, match):
    with pytest.raises(error, match=match):
        llama_llm.generate([OK, prompt], [GREEDY, params], use_tqdm=False)
    _clean(llama_llm, reference)


def test_allowed_ids_banned_only_by_min_tokens_are_fine_without_it(llama_llm, reference):
    outs = llama_llm.generate([OK], SamplingParams(allowed_token_ids=[0, 9], max_tokens=2, min_tokens=0),
                              use_tqdm=False)
    assert outs[0].outputs[0].finish_reason in ("stop", "length")
    _clean(llama_llm, reference)


@pytest.mark.parametrize("kwargs,match", [
    ({"allowed_token_ids": [42], "logit_bias": {42: float("-inf")}}, "no token can be sampled"),
    ({"bad_words": ["a\ud800"]}, "bad_words is not valid Unicode text"),
    ({"stop": ["\udcff"]}, "stop is not valid Unicode text"),
])
def test_sampling_params_refuse_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("conversations,error,match", [
    ([USER, [{"role": "user", "content": "\ud800"}]], ValueError,
     r"conversation 1: message 0: 'content' is not valid Unicode"),
    ([USER, [{"role": "user", "content": [{"type": "text", "text": "a\udfff"}]}]], ValueError,
     "conversation 1: message 0, part 0 is not valid Unicode"),
    ([USER, [{"content": "hi"}]], ValueError, "conversation 1: message 0: 'role' must be a non-empty str"),
    ([USER, [USER[0], {"role": "user", "content": None}]], ValueError, "conversation 1: message 1 .*'content'"),
    ([USER, []], ValueError, "conversation 1: "),
    ([{"role": "user", "content": "\ud800"}], ValueError, "message 0: 'content' is not valid Unicode"),
])
def test_bad_chat_message_names_its_conversation_and_message(llama_llm, reference, conversations, error, match):
    with pytest.raises(error, match=match):
        llama_llm.chat(conversations, GREEDY, use_tqdm=False)
    _clean(llama_llm, reference)


@pytest.mark.parametrize("where", ["dispatch", "fetch"])
def test_interrupt_inside_a_step_leaves_nothing_behind(llama_llm, reference, monkeypatch, where):
    """Ctrl-C while the device works (in the runner, not in a callback): no request, block or step in flight is
    left, and the next call is unchanged."""
    runner = llama_llm.llm_engine.runner
    real, calls = getattr(runner, where), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        llama_llm.generate([OK] * 3, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    monkeypatch.undo()
    engine = llama_llm.llm_engine
    assert engine.block_manager.num_free_blocks == engine.num_blocks
    _clean(llama_llm, reference)


def test_grammar_that_ends_before_min_tokens_finishes_with_error(llama_llm, reference):
    """A finished grammar allows only EOS, which min_tokens bans: no token is left, so the request ends with
    finish_reason "error" and the grammar's text (the other request is unchanged)."""
    params = SamplingParams(temperature=0, max_tokens=12, min_tokens=10,
                            structured_outputs=StructuredOutputsParams(choice=["yes"]))
    outs = llama_llm.generate([{"prompt": "answer:"}, OK], [params, GREEDY], use_tqdm=False)
    assert outs[0].outputs[0].finish_reason == "error" and outs[0].outputs[0].text == "yes"
    assert outs[1].outputs[0].token_ids == reference
    _clean(llama_llm, reference)
