"""vLLM's documented behaviour of ``LLM.generate`` end to end on a tiny random Llama: prompt forms, finish and stop
reasons, logprob formats, the SamplingParams fields that shape a completion, and the errors vLLM raises."""

from __future__ import annotations

import itertools
import math

import pytest
from hf_models import save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, Logprob, SamplingParams, TextPrompt, TokensPrompt

EOS = 0
MAX_MODEL_LEN = 64
G = {"use_tqdm": False}


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit_llama")
    save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=EOS, bos_token_id=None)
    save_tokenizer_with_template(path)
    return LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, max_model_len=MAX_MODEL_LEN,
               enforce_eager=True)


def one(llm, prompt="a b", **kw):
    return llm.generate(prompt, SamplingParams(**kw), **G)[0].outputs[0]


GREEDY = {"temperature": 0.0, "ignore_eos": True, "max_tokens": 6}


def test_every_prompt_form_gives_the_same_completion(llm):
    ids = llm.get_tokenizer()("a b").input_ids
    forms = ["a b", TextPrompt(prompt="a b"), TokensPrompt(prompt_token_ids=ids),
             {"prompt_token_ids": ids, "prompt": "given text"}]
    outs = llm.generate(forms, SamplingParams(**GREEDY), **G)
    assert len({tuple(o.outputs[0].token_ids) for o in outs}) == 1
    assert [o.prompt for o in outs] == ["a b", "a b", None, "given text"]  # token ids alone carry no text
    assert all(o.prompt_token_ids == ids and all(type(t) is int for t in o.prompt_token_ids) for o in outs)
    assert all(o.finished and type(o.outputs[0].token_ids) is list for o in outs)
    assert len({o.request_id for o in outs}) == 4 and all(isinstance(o.request_id, str) for o in outs)
    single = llm.generate("a b", SamplingParams(**GREEDY), **G)  # one prompt: still a list
    assert len(single) == 1 and single[0].outputs[0].token_ids == outs[0].outputs[0].token_ids
    # current vLLM: a list of ints is one prompt of token ids, a list of such lists a batch of them
    raw = llm.generate(ids, SamplingParams(**GREEDY), **G)
    assert len(raw) == 1 and raw[0].prompt is None and raw[0].outputs[0].token_ids == outs[0].outputs[0].token_ids
    batch = llm.generate([ids, ids[:1]], SamplingParams(**GREEDY), **G)
    assert [o.prompt_token_ids for o in batch] == [ids, ids[:1]]
    assert llm.generate([], SamplingParams(**GREEDY), **G) == []
    with pytest.raises(TypeError, match="prompt 0"):
        llm.generate([ids[0], [1]], SamplingParams(**GREEDY), **G)


def test_per_prompt_sampling_params_and_defaults(llm):
    outs = llm.generate(["a", "b", "c"], [SamplingParams(max_tokens=k, ignore_eos=True) for k in (1, 3, 5)], **G)
    assert [len(o.outputs[0].token_ids) for o in outs] == [1, 3, 5]
    with pytest.raises(ValueError, match="lengths of prompts"):
        llm.generate(["a", "b"], [SamplingParams()], **G)
    default = llm.get_default_sampling_params()
    assert isinstance(default, SamplingParams) and default.max_tokens == 16
    assert default is not llm.get_default_sampling_params()  # a copy each time
    # sampling_params=None uses the defaults: 16 tokens unless EOS comes first
    out = llm.generate("a", None, **G)[0].outputs[0]
    assert out.finish_reason == "stop" or len(out.token_ids) == 16


def test_priority_needs_the_priority_policy(llm):
    with pytest.raises(ValueError, match="Priority scheduling is not enabled"):
        llm.generate(["a", "b"], SamplingParams(max_tokens=1), priority=[1, 0], **G)
    with pytest.raises(ValueError, match="priority"):
        llm.generate(["a", "b"], SamplingParams(max_tokens=1), priority=[0], **G)


def test_length_and_eos(llm):
    c = one(llm, max_tokens=3, ignore_eos=True)
    assert (c.finish_reason, c.stop_reason, len(c.token_ids)) == ("length", None, 3) and c.finished()
    c = one(llm, max_tokens=5, logit_bias={EOS: 100.0})  # EOS first: in token_ids, not in text
    assert (c.finish_reason, c.stop_reason, c.token_ids, c.text) == ("stop", None, [EOS], "")
    c = one(llm, max_tokens=3, logit_bias={EOS: 100.0}, ignore_eos=True)
    assert (c.finish_reason, c.token_ids, c.text) == ("length", [EOS] * 3, "")  # special tokens skipped
    c = one(llm, max_tokens=3, logit_bias={EOS: 100.0}, ignore_eos=True, skip_special_tokens=False)
    assert c.text.replace(" ", "") == "<eos>" * 3
    c = one(llm, max_tokens=8, min_tokens=3, logit_bias={EOS: 100.0})  # EOS is banned for min_tokens tokens
    assert len(c.token_ids) == 4 and c.token_ids[-1] == EOS and EOS not in c.token_ids[:3]


def test_max_tokens_none_runs_to_max_model_len(llm):
    out = llm.generate("a b", SamplingParams(max_tokens=None, ignore_eos=True), **G)[0]
    assert len(out.prompt_token_ids) + len(out.outputs[0].token_ids) == MAX_MODEL_LEN
    assert out.outputs[0].finish_reason == "length"


def test_stop_token_ids(llm):
    a = llm.get_tokenizer().convert_tokens_to_ids("a")
    c = one(llm, max_tokens=5, logit_bias={a: 100.0}, stop_token_ids=[a])
    assert (c.finish_reason, c.stop_reason, c.token_ids, c.text) == ("stop", a, [a], "")
    assert type(c.stop_reason) is int
    c = one(llm, max_tokens=5, logit_bias={a: 100.0}, stop_token_ids=[a], include_stop_str_in_output=True)
    assert (c.stop_reason, c.text) == (a, "a")


def test_stop_strings(llm):
    full = one(llm, **{**GREEDY, "max_tokens": 20})
    stop = full.text[3:5]
    cut = full.text.index(stop)
    c = one(llm, **{**GREEDY, "max_tokens": 20}, stop=["never there", stop])
    assert (c.finish_reason, c.stop_reason, c.text) == ("stop", stop, full.text[:cut])
    assert c.token_ids == full.token_ids[:len(c.token_ids)] and len(c.token_ids) < 20
    c = one(llm, **{**GREEDY, "max_tokens": 20}, stop=stop, include_stop_str_in_output=True)
    assert (c.stop_reason, c.text) == (stop, full.text[:cut + len(stop)])
    # stop strings are looked for only once more than min_tokens tokens exist, in the text new since then
    tok = llm.get_tokenizer()
    n_stop = next(n for n in range(1, 21) if stop in tok.decode(full.token_ids[:n], skip_special_tokens=True))
    c = one(llm, **{**GREEDY, "max_tokens": 20}, stop=stop, min_tokens=n_stop)
    assert len(c.token_ids) > n_stop and c.text.startswith(full.text[:cut + len(stop)])


def _check_position(d, sampled, k):
    assert isinstance(d, dict) and sampled in d and len(d) in (k, k + 1)  # the sampled token is always there,
    assert next(iter(d)) == sampled  # first (vLLM puts it before the top-k)
    assert all(isinstance(lp, Logprob) and isinstance(lp.rank, int) and lp.logprob <= 0.0 for lp in d.values())
    top = sorted((lp for t, lp in d.items() if lp.rank <= k), key=lambda lp: lp.rank)
    assert [lp.rank for lp in top] == list(range(1, k + 1))
    assert all(x.logprob >= y.logprob for x, y in itertools.pairwise(top))
    assert all(lp.logprob <= top[0].logprob for lp in d.values())


def test_sample_logprobs_format(llm):
    tok = llm.get_tokenizer()
    c = one(llm, max_tokens=6, ignore_eos=True, logprobs=3, temperature=1.5, seed=3)
    assert len(c.logprobs) == len(c.token_ids)
    for d, t in zip(c.logprobs, c.token_ids):
        _check_position(d, t, 3)
        assert all(lp.decoded_token == tok.decode([tid]) for tid, lp in d.items())
    assert math.isclose(c.cumulative_logprob, sum(d[t].logprob for d, t in zip(c.logprobs, c.token_ids)),
                        rel_tol=1e-5)
    only = one(llm, max_tokens=4, ignore_eos=True, logprobs=0, temperature=1.5, seed=3)
    assert [list(d) for d in only.logprobs] == [[t] for t in only.token_ids]  # logprobs=0: the sampled token only
    none = one(llm, max_tokens=2, ignore_eos=True)
    assert none.logprobs is None and none.cumulative_logprob is None
    greedy = one(llm, **GREEDY, logprobs=2)
    assert all(d[t].rank == 1 for d, t in zip(greedy.logprobs, greedy.token_ids))


def test_logprobs_cap_is_checked_when_the_request_is_added(llm):
    # vLLM: any count >= -1 constructs; the LLM's max_logprobs (20 by default) is enforced by generate
    too_many, everything = SamplingParams(logprobs=21), SamplingParams(prompt_logprobs=-1)
    with pytest.raises(ValueError, match="Requested sample logprobs of 21, which is greater than max allowed: 20"):
        llm.generate("a", too_many, **G)
    with pytest.raises(ValueError, match="Requested prompt logprobs of 448, which is greater than max allowed"):
        llm.generate("a", everything, **G)  # -1: the whole vocabulary
    with pytest.raises(ValueError, match="logprobs must be non-negative or -1, got -2"):
        SamplingParams(logprobs=-2)
    c = one(llm, max_tokens=2, ignore_eos=True, logprobs=20, temperature=1.5, seed=3)
    assert all(len(d) in (20, 21) for d in c.logprobs)


def test_prompt_logprobs_format(llm):
    out = llm.generate("a b c", SamplingParams(max_tokens=1, prompt_logprobs=2), **G)[0]
    ids = out.prompt_token_ids
    assert len(out.prompt_logprobs) == len(ids) and out.prompt_logprobs[0] is None
    for d, t in zip(out.prompt_logprobs[1:], ids[1:]):
        _check_position(d, t, 2)
    assert llm.generate("a", SamplingParams(max_tokens=1), **G)[0].prompt_logprobs is None


def test_detokenize_false(llm):
    ref = one(llm, **GREEDY)
    c = one(llm, **GREEDY, detokenize=False, logprobs=1)
    assert c.text == "" and c.token_ids == ref.token_ids
    assert all(lp.decoded_token is None for d in c.logprobs for lp in d.values())


def test_greedy_and_disabled_truncations(llm):
    greedy = one(llm, **GREEDY)
    assert one(llm, **{**GREEDY, "temperature": 1.0}, top_k=1, seed=4).token_ids == greedy.token_ids
    base = one(llm, max_tokens=6, ignore_eos=True, seed=11).token_ids
    for off in ({"top_k": 0}, {"top_k": -1}, {"top_p": 1.0}, {"min_p": 0.0}):
        assert one(llm, max_tokens=6, ignore_eos=True, seed=11, **off).token_ids == base, off


def test_n_samples_and_seeds(llm):
    out = llm.generate("a b", SamplingParams(n=3, max_tokens=6, ignore_eos=True, seed=5), **G)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3
    again = llm.generate(["x y", "a b"], SamplingParams(n=3, max_tokens=6, ignore_eos=True, seed=5), **G)[1]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]  # batch-independent
    for i, c in enumerate(out.outputs):  # sample i runs with seed + i, as vLLM's parallel sampling does
        assert one(llm, "a b", max_tokens=6, ignore_eos=True, seed=5 + i).token_ids == c.token_ids


def test_token_restrictions(llm):
    tok = llm.get_tokenizer()
    allowed = tok.convert_tokens_to_ids(["a", "b"])
    c = one(llm, max_tokens=8, ignore_eos=True, allowed_token_ids=allowed, seed=1)
    assert set(c.token_ids) <= set(allowed)
    greedy = one(llm, **GREEDY)
    banned = greedy.token_ids[0]
    c = one(llm, **GREEDY, logit_bias={banned: -math.inf})
    assert c.token_ids[0] != banned
    word = tok.decode(greedy.token_ids[:1])
    assert one(llm, **GREEDY, bad_words=[word]).token_ids[0] != banned


def test_truncate_prompt_tokens_keeps_the_last_tokens(llm):
    ids = llm.get_tokenizer()("a b c d e f").input_ids
    out = llm.generate("a b c d e f", SamplingParams(max_tokens=1, truncate_prompt_tokens=3), **G)[0]
    assert out.prompt_token_ids == ids[-3:]
    out = llm.generate("a b c d e f", SamplingParams(max_tokens=1, truncate_prompt_tokens=-1), **G)[0]
    assert out.prompt_token_ids == ids


def test_bad_prompts_raise_like_vllm(llm):
    with pytest.raises(ValueError, match="The decoder prompt cannot be empty"):
        llm.generate("", SamplingParams(max_tokens=1), **G)
    with pytest.raises(ValueError, match="longer than the maximum model length"):
        llm.generate({"prompt_token_ids": [5] * (MAX_MODEL_LEN + 1)}, SamplingParams(max_tokens=1), **G)
    with pytest.raises(ValueError, match=r"\(length 64\) plus the number of requested output tokens \(at least 1\) "
                       "is longer than the maximum model length of 64"):
        llm.generate({"prompt_token_ids": [5] * MAX_MODEL_LEN}, SamplingParams(max_tokens=1), **G)
    one_left = llm.generate({"prompt_token_ids": [5] * (MAX_MODEL_LEN - 1)},
                            SamplingParams(max_tokens=9, ignore_eos=True), **G)[0]
    assert len(one_left.outputs[0].token_ids) == 1 and one_left.outputs[0].finish_reason == "length"
    with pytest.raises(ValueError, match="out of vocabulary"):
        llm.generate({"prompt_token_ids": [10**6]}, SamplingParams(max_tokens=1), **G)
    salted = llm.generate({"prompt": "a", "cache_salt": "user-1"}, SamplingParams(max_tokens=1), **G)
    assert len(salted[0].outputs[0].token_ids) == 1  # vLLM's prompt field (tests/llm/test_cache_salt.py)
    with pytest.raises(ValueError, match="out-of-vocab"):
        llm.generate("a", SamplingParams(max_tokens=1, stop_token_ids=[10**6]), **G)
    # a bad request in a batch fails the call before anything runs; the LLM keeps working
    with pytest.raises(ValueError, match="prompt 1"):
        llm.generate(["a", ""], SamplingParams(max_tokens=1), **G)
    assert llm.generate("a", SamplingParams(max_tokens=1), **G)[0].finished


@pytest.mark.parametrize("kwargs", [{"n": 1.5}, {"top_k": 1.5}, {"temperature": "hot"}, {"ignore_eos": "yes"},
                                    {"stop_token_ids": [1, "2"]}])
def test_wrong_types_are_value_errors_as_in_vllm(kwargs):
    """vLLM's VLLMValidationError (a ValueError) for ``n`` / ``top_k`` / ``stop_token_ids`` of the wrong type;
    jaxllm's error is also a TypeError, so either ``except`` catches it."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)
