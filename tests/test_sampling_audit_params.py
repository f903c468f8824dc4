"""vLLM's documented SamplingParams semantics that need no model: normalization, ``from_optional``, ``clone`` /
equality, removed fields, ``update_from_generation_config`` / ``update_from_tokenizer`` and the default sampling
parameters built from a generation config."""

from __future__ import annotations

import pytest

from jaxllm import SamplingParams
from jaxllm.generation_config import default_sampling_params
from jaxllm.sampling_params import RequestOutputKind


def test_stop_is_kept_as_given_while_ids_and_bad_words_are_deduplicated():
    p = SamplingParams(stop=["b", "a", "b"], stop_token_ids=[4, 2, 4], bad_words=["x", "y", "x"])
    assert p.stop == ["b", "a", "b"]  # vLLM keeps stop strings as given
    assert p.stop_token_ids == [4, 2] and p.bad_words == ["x", "y"]
    assert SamplingParams(stop="a").stop == ["a"] and SamplingParams(stop=None).stop == []
    assert p.all_stop_token_ids == {2, 4}


def test_from_optional_none_means_default_for_vllms_fields_only():
    p = SamplingParams.from_optional(n=None, presence_penalty=None, frequency_penalty=None, repetition_penalty=None,
                                     temperature=None, top_p=None, max_tokens=None, seed=None)
    d = SamplingParams()
    assert (p.n, p.presence_penalty, p.frequency_penalty, p.repetition_penalty, p.temperature, p.top_p) == (
        d.n, d.presence_penalty, d.frequency_penalty, d.repetition_penalty, d.temperature, d.top_p)
    assert p.max_tokens is None  # max_tokens=None is kept: up to max_model_len
    q = SamplingParams.from_optional(logit_bias={"3": 250.0, 4: -1e9, "5": 0.5})
    assert q.logit_bias == {3: 100.0, 4: -100.0, 5: 0.5}  # string keys become ids, biases clamped to [-100, 100]
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams.from_optional(logit_bias={"x": 1.0})
    with pytest.raises(TypeError, match="best_of"):
        SamplingParams.from_optional(best_of=2)


def test_best_of_and_use_beam_search_are_gone_as_in_vllm_v1():
    for name in ("best_of", "use_beam_search", "length_penalty", "early_stopping"):
        with pytest.raises(TypeError, match=name):
            SamplingParams(**{name: 2})


def test_clone_equality_and_repr():
    p = SamplingParams(n=2, temperature=0.7, stop=["x"], stop_token_ids=[7], logit_bias={1: 2.0}, seed=3,
                       output_kind=RequestOutputKind.DELTA)
    q = p.clone()
    assert q == p and q is not p and q.stop is not p.stop and q.logit_bias is not p.logit_bias
    q.stop_token_ids.append(8)
    assert p.stop_token_ids == [7] and q != p
    shallow = SamplingParams(stop=["x"], skip_clone=True).clone()  # vLLM: skip_clone makes clone() shallow
    assert shallow.stop is shallow.clone().stop
    assert SamplingParams(temperature=0.5) == SamplingParams(temperature=0.5)
    assert SamplingParams(temperature=0.5) != SamplingParams(temperature=0.6)
    r = repr(p)
    assert r.startswith("SamplingParams(n=2, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, "
                        "temperature=0.7, top_p=1.0, top_k=0, min_p=0.0, seed=3, stop=['x'], stop_token_ids=[7], ")
    assert r.endswith("max_tokens=16, min_tokens=0, logprobs=None, prompt_logprobs=None, skip_special_tokens=True, "
                      "spaces_between_special_tokens=True, truncate_prompt_tokens=None, structured_outputs=None, "
                      "extra_args=None)")  # vLLM's fields, in vLLM's order


def test_greedy_normalization_and_n():
    g = SamplingParams(temperature=0.0, top_p=0.3, top_k=4, min_p=0.5)
    assert (g.top_p, g.top_k, g.min_p) == (1.0, 0, 0.0)
    with pytest.raises(ValueError, match="n must be 1 when using greedy sampling, got 3"):
        SamplingParams(n=3, temperature=0.0)
    assert SamplingParams(n=3, temperature=1e-3).temperature == 0.01  # raised to 1e-2, so not greedy
    with pytest.raises(ValueError, match="n must be at least 1"):
        SamplingParams(n=0)


def test_update_from_generation_config_merges_the_models_eos_ids():
    p = SamplingParams(stop_token_ids=[9])
    p.update_from_generation_config({"eos_token_id": [2, 5, 6]}, eos_token_id=2)
    assert p.eos_token_id == 2
    assert p.stop_token_ids == [9, 5, 6]  # the primary EOS is handled as EOS, not as a stop id
    assert p.all_stop_token_ids == {2, 5, 6, 9}
    single = SamplingParams()
    single.update_from_generation_config({"eos_token_id": 4}, eos_token_id=2)
    assert (single.stop_token_ids, single.all_stop_token_ids) == ([4], {2, 4})
    ignoring = SamplingParams(ignore_eos=True)
    ignoring.update_from_generation_config({"eos_token_id": [2, 5]}, eos_token_id=2)
    assert ignoring.eos_token_id is None and ignoring.stop_token_ids == []  # ignore_eos: neither stops ...
    assert ignoring.all_stop_token_ids == {2, 5}  # ... but min_tokens still bans them
    plain = SamplingParams()
    plain.update_from_generation_config({}, eos_token_id=None)
    assert (plain.eos_token_id, plain.stop_token_ids, plain.all_stop_token_ids) == (None, [], set())


class _Tokenizer:
    eos_token_id = 1

    def encode(self, text, add_special_tokens=False):
        return {"ab": [3, 4], " ab": [5, 4], "c": [6], " c": [7, 8]}[text]


def test_update_from_tokenizer_keeps_vllms_prefix_space_rule():
    p = SamplingParams(bad_words=["ab", " c"])
    p.update_from_tokenizer(_Tokenizer())
    # " ab" is a different first token of the same length: also banned; " c" has another length: not added
    assert p.bad_words_token_ids == [[3, 4], [5, 4], [6]]


def test_default_sampling_params_take_vllms_generation_config_keys_only():
    gen = {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
           "max_new_tokens": 40, "do_sample": False, "num_beams": 4, "length_penalty": 2.0, "eos_token_id": [1, 2]}
    p = default_sampling_params(gen)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.max_tokens) == (
        0.6, 0.9, 20, 0.05, 1.1, 40)
    # vLLM's get_diff_sampling_param reads only those keys: do_sample=False does not make it greedy
    assert default_sampling_params({"do_sample": False}) == SamplingParams()
    assert default_sampling_params({"temperature": None, "top_k": None}) == SamplingParams()


def test_generation_config_modes_keep_the_models_eos_ids(tmp_path):
    from types import SimpleNamespace

    from jaxllm.generation_config import read_generation_config

    (tmp_path / "generation_config.json").write_text('{"temperature": 0.3, "eos_token_id": [1, 7]}')

    def args(where, override=None):
        return SimpleNamespace(generation_config=where, override_generation_config=override)

    assert read_generation_config(args("auto"), str(tmp_path)) == {"temperature": 0.3, "eos_token_id": [1, 7]}
    # "vllm": vLLM's neutral sampling defaults, but the model's EOS ids still stop requests
    assert read_generation_config(args("vllm", {"top_k": 3}), str(tmp_path)) == {"eos_token_id": [1, 7], "top_k": 3}
    assert read_generation_config(args("vllm"), None) == {}
    assert read_generation_config(args(str(tmp_path)), None)["temperature"] == 0.3
    with pytest.raises(ValueError, match="no generation_config.json"):
        read_generation_config(args(str(tmp_path / "none")), str(tmp_path))


@pytest.mark.parametrize("mode", ["raw_logits", "processed_logprobs", "processed_logits"])
def test_logprobs_modes_are_vllms_and_an_unknown_one_is_refused_by_name(mode):
    from jaxllm.engine_args import EngineArgs

    assert EngineArgs.from_kwargs({}).logprobs_mode == "raw_logprobs"  # vLLM's default
    assert EngineArgs.from_kwargs({"logprobs_mode": mode}).logprobs_mode == mode
    with pytest.raises(ValueError, match=f"logprobs_mode='{mode.upper()}'"):
        EngineArgs.from_kwargs({"logprobs_mode": mode.upper()})
