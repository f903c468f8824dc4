"""SamplingParams: vLLM's defaults, normalization and constructor validation."""

from __future__ import annotations

import numpy as np
import pytest

from jaxllm.sampling_params import SamplingParams, SamplingType


def test_defaults_match_vllm():
    p = SamplingParams()
    assert (p.n, p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (1, 0.0, 0.0, 1.0)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (1.0, 1.0, 0, 0.0, None)
    assert (p.stop, p.stop_token_ids, p.bad_words) == ([], [], [])
    assert (p.include_stop_str_in_output, p.ignore_eos, p.max_tokens, p.min_tokens) == (False, False, 16, 0)
    assert (p.logprobs, p.prompt_logprobs) == (None, None)
    assert (p.detokenize, p.skip_special_tokens, p.spaces_between_special_tokens) == (True, True, True)
    assert (p.logit_bias, p.allowed_token_ids) == (None, None)
    assert p.sampling_type == SamplingType.RANDOM and not p.is_greedy
    assert repr(p).startswith("SamplingParams(n=1, presence_penalty=0.0")


def test_normalization():
    p = SamplingParams(stop="x", stop_token_ids=[3, 3, 2], top_k=-1, seed=-1, logprobs=True)
    assert p.stop == ["x"] and p.stop_token_ids == [3, 2] and p.top_k == -1 and p.seed is None
    assert p.logprobs == 1 and p.all_stop_token_ids == {2, 3}
    g = SamplingParams(temperature=0.0, top_p=0.5, top_k=5, min_p=0.2)
    assert g.is_greedy and (g.top_p, g.top_k, g.min_p) == (1.0, 0, 0.0)
    assert g.sampling_type == SamplingType.GREEDY
    assert SamplingParams(seed=3).sampling_type == SamplingType.RANDOM_SEED
    assert SamplingParams(temperature=0.001).temperature == 0.01  # vLLM raises tiny temperatures
    assert SamplingParams(top_k=np.int64(5), temperature=np.float32(0.5)).top_k == 5
    assert SamplingParams(logit_bias={"5": 1, 7: -2.5}).logit_bias == {5: 1.0, 7: -2.5}
    assert SamplingParams(max_tokens=None).max_tokens is None


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"n": 0}, ValueError, "n must be at least 1, got 0"),
        ({"n": 2, "temperature": 0.0}, ValueError, "n must be 1 when using greedy sampling, got 2"),
        ({"presence_penalty": 3}, ValueError, r"presence_penalty must be in \[-2, 2\], got 3.0"),
        ({"frequency_penalty": -2.5}, ValueError, r"frequency_penalty must be in \[-2, 2\]"),
        ({"repetition_penalty": 0}, ValueError, "repetition_penalty must be greater than zero"),
        ({"repetition_penalty": float("inf")}, ValueError, "repetition_penalty must be a finite number"),
        ({"temperature": -0.5}, ValueError, "temperature must be non-negative, got -0.5"),
        ({"temperature": float("nan")}, ValueError, "temperature must be a finite number"),
        ({"temperature": 2.5}, ValueError, r"temperature must be in \[0, 2\]"),
        ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_k": -2}, ValueError, "top_k must be 0 \\(disable\\), or at least 1, got -2"),
        ({"min_p": 1.5}, ValueError, r"min_p must be in \[0, 1\]"),
        ({"max_tokens": 0}, ValueError, "max_tokens must be at least 1, got 0"),
        ({"min_tokens": -1}, ValueError, "min_tokens must be greater than or equal to 0"),
        (
            {"min_tokens": 5, "max_tokens": 3},
            ValueError,
            "min_tokens must be less than or equal to max_tokens=3",
        ),
        ({"logprobs": -2}, ValueError, "logprobs must be non-negative or -1"),
        ({"prompt_logprobs": -3}, ValueError, "prompt_logprobs must be non-negative or -1"),
        ({"stop": ["a", ""]}, ValueError, "stop cannot contain an empty string"),
        (
            {"stop": ["a"], "detokenize": False},
            ValueError,
            "stop strings are only supported when detokenize is True",
        ),
        ({"bad_words": [""]}, ValueError, "bad_words cannot contain an empty string"),
        ({"allowed_token_ids": []}, ValueError, "allowed_token_ids is not None and empty"),
        ({"stop_token_ids": [-1]}, ValueError, "stop_token_ids must contain only non-negative"),
        ({"logit_bias": {"x": 1.0}}, ValueError, "logit_bias contains key"),
        ({"logit_bias": {1: float("nan")}}, ValueError, "NaN"),
        ({"temperature": "hot"}, TypeError, "temperature must be a number, got str \\('hot'\\)"),
        ({"n": 1.5}, TypeError, "n must be an int, got float"),
        ({"n": True}, TypeError, "n must be an int, got bool"),
        ({"max_tokens": "5"}, TypeError, "max_tokens must be an int or None"),
        ({"seed": 1.0}, TypeError, "seed must be an int or None"),
        ({"stop": 5}, TypeError, "stop must be a str or a list of str"),
        ({"stop": ["a", 1]}, TypeError, "stop must contain only strings"),
        ({"stop_token_ids": [1, "2"]}, TypeError, "stop_token_ids must contain only integers"),
        ({"stop_token_ids": 3}, TypeError, "stop_token_ids must be a list of ints"),
        ({"ignore_eos": "yes"}, TypeError, "ignore_eos must be a bool"),
        ({"logit_bias": [1, 2]}, TypeError, "logit_bias must be a dict"),
        ({"logit_bias": {1: "a"}}, TypeError, "must be a number"),
        ({"temprature": 0.5}, TypeError, "temprature"),
    ],
)
def test_validation(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        SamplingParams(**kwargs)


def test_positional_arguments_rejected():
    with pytest.raises(TypeError):
        SamplingParams(2)  # keyword-only, as vLLM's struct fields are used


def test_clone_is_deep_and_equal():
    p = SamplingParams(stop=["a"], logit_bias={1: 2.0}, seed=3)
    q = p.clone()
    assert q == p and q is not p
    q.stop.append("b")
    assert p.stop == ["a"]


class FakeTokenizer:
    eos_token_id = 2

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        # words map to one id, a leading space to a different id
        table = {
            "bad": [10],
            " bad": [11],
            "two words": [12, 13],
            " two words": [14, 13],
            "same": [20],
            " same": [20],
        }
        return table[text]


def test_update_from_tokenizer():
    p = SamplingParams(bad_words=["bad", " two words", "same"], stop_token_ids=[5])
    assert p.bad_words_token_ids is None
    p.update_from_tokenizer(FakeTokenizer())
    assert p.bad_words_token_ids == [[10], [11], [12, 13], [14, 13], [20]]
    assert p.all_stop_token_ids == {5, 2}
