"""Property-based tests (hypothesis) of careless and hostile input: random SamplingParams, prompt shapes and
chat messages. Whatever the input, an LLM call either works or raises ValueError / TypeError before any device
work; it never changes another request's output and never leaves a request behind."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxllm import SamplingParams

ANY_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
TOKEN_IDS = st.lists(st.integers(-5, 600), max_size=6)
FIELDS = {
    "n": st.one_of(st.integers(-2, 3), ANY_SCALAR),
    "temperature": st.one_of(st.floats(-1, 3), ANY_SCALAR),
    "top_p": st.one_of(st.floats(-0.5, 1.5), ANY_SCALAR),
    "top_k": st.one_of(st.integers(-3, 600), ANY_SCALAR),
    "min_p": st.one_of(st.floats(-0.5, 1.5), ANY_SCALAR),
    "presence_penalty": st.one_of(st.floats(-3, 3), ANY_SCALAR),
    "frequency_penalty": st.one_of(st.floats(-3, 3), ANY_SCALAR),
    "repetition_penalty": st.one_of(st.floats(-1, 3), ANY_SCALAR),
    "seed": st.one_of(st.integers(-2**70, 2**70), ANY_SCALAR),
    "max_tokens": st.one_of(st.integers(-2, 6), ANY_SCALAR),
    "min_tokens": st.one_of(st.integers(-2, 8), ANY_SCALAR),
    "stop": st.one_of(st.lists(st.text(max_size=4), max_size=3), ANY_SCALAR),
    "stop_token_ids": st.one_of(TOKEN_IDS, ANY_SCALAR),
    "logprobs": st.one_of(st.integers(-2, 30), ANY_SCALAR),
    "logit_bias": st.one_of(st.dictionaries(st.integers(-5, 600), st.floats(allow_nan=True), max_size=3),
                            ANY_SCALAR),
    "allowed_token_ids": st.one_of(TOKEN_IDS, ANY_SCALAR),
    "bad_words": st.one_of(st.lists(st.text(max_size=5), max_size=3), ANY_SCALAR),
    "ignore_eos": st.one_of(st.booleans(), ANY_SCALAR),
}
PARAM_KWARGS = st.fixed_dictionaries({}, optional=FIELDS)
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@given(PARAM_KWARGS)
@settings(max_examples=400, deadline=None)
def test_sampling_params_validate_or_raise(kwargs):
    try:
        params = SamplingParams(**kwargs)
    except (ValueError, TypeError):
        return
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"):
        value = getattr(params, name)
        assert not (isinstance(value, float) and math.isnan(value)), f"{name}=NaN accepted"


REFERENCE = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


@pytest.fixture(scope="module")
def reference(llama_llm):
    return llama_llm.generate([{"prompt_token_ids": [5, 6, 7, 8]}], REFERENCE, use_tqdm=False)[0].outputs[0].token_ids


def _check_batch(llm, reference, prompt, params):
    """``prompt``/``params`` beside a fixed greedy request: a clean error naming the first prompt (index 0) or
    results, the other request's output unchanged either way."""
    try:
        outs = llm.generate([prompt, {"prompt_token_ids": [5, 6, 7, 8]}], [params, REFERENCE], use_tqdm=False)
    except (ValueError, TypeError) as e:
        assert "prompt 0" in str(e), f"does not name the prompt's index: {e}"
        assert not llm.llm_engine.has_unfinished_requests()
        return
    assert outs[1].outputs[0].token_ids == reference
    assert not llm.llm_engine.has_unfinished_requests()


@SLOW
@given(PARAM_KWARGS)
def test_generate_with_random_params(llama_llm, reference, kwargs):
    try:
        params = SamplingParams(**kwargs)
    except (ValueError, TypeError):
        return
    if params.max_tokens is not None:
        params.max_tokens = min(params.max_tokens, 4)
    params.n = min(params.n, 2)
    _check_batch(llama_llm, reference, {"prompt_token_ids": [1, 2, 3]}, params)


PROMPTS = st.one_of(
    st.text(max_size=12), TOKEN_IDS, st.lists(st.integers(-2**63, 2**64), max_size=3),
    st.fixed_dictionaries({"prompt_token_ids": st.one_of(TOKEN_IDS, ANY_SCALAR)}),
    st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=8), ANY_SCALAR)}),
    st.dictionaries(st.text(max_size=6), ANY_SCALAR, max_size=2), ANY_SCALAR,
    st.lists(st.one_of(st.integers(0, 100), st.floats(), st.text(max_size=2)), max_size=3),
    st.just("\ud800 lone surrogate"), st.just(""), st.just([]),
)


@SLOW
@given(PROMPTS)
def test_generate_with_random_prompts(llama_llm, reference, prompt):
    _check_batch(llama_llm, reference, prompt, SamplingParams(max_tokens=2))


MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]),
                           "content": st.one_of(st.text(max_size=10), st.none(), st.integers())}),
    st.dictionaries(st.sampled_from(["role", "content", "name", "extra"]), ANY_SCALAR, max_size=3),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "bogus"]), "text": st.text(max_size=5)}),
        max_size=2)}),
    ANY_SCALAR,
)


@SLOW
@given(st.lists(MESSAGE, min_size=0, max_size=3))
def test_chat_with_random_messages(llama_llm, reference, messages):
    try:
        llama_llm.chat(messages, SamplingParams(max_tokens=2), use_tqdm=False)
    except (ValueError, TypeError) as e:
        assert any(w in str(e) for w in ("message", "conversation")), f"names no message: {e}"
    assert not llama_llm.llm_engine.has_unfinished_requests()
    out = llama_llm.generate([{"prompt_token_ids": [5, 6, 7, 8]}], REFERENCE, use_tqdm=False)[0].outputs[0].token_ids
    assert out == reference
