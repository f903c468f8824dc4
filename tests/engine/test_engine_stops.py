"""Stop conditions, text, logprobs and bad input through LLMEngine (scripted fake runner, BPE tokenizer)."""

from __future__ import annotations

import pytest
from bpe_tokenizer import bpe_tokenizer
from engine_fakes import VOCAB, CacheCheckingRunner, fake_logprob, make_engine, reference_greedy

from jaxllm.engine import LLMEngine
from jaxllm.sampling_params import SamplingParams

EOS = 0
PROMPT = [10, 11, 12, 13, 14]


def engine(script=None, **overrides):
    """A smaller pool and budget than the scheduling tests; EOS is token 0."""
    kw = {"num_blocks": 64, "max_num_seqs": 4, "max_num_batched_tokens": 32, "max_model_len": 64, "eos_token_ids": (EOS,)}
    return make_engine(script=script, **{**kw, **overrides})


def run(eng, prompt=PROMPT, **kw):
    eng.add_request("r", prompt, SamplingParams(temperature=0.0, **kw))
    outs = []
    while eng.has_unfinished_requests():
        outs += [o for o in eng.step() if o.finished]
    assert len(outs) == 1
    return outs[0], outs[0].outputs[0]


def test_eos_kept_in_token_ids():
    eng, _ = engine({tuple(PROMPT): [5, 6, EOS, 7]})
    _, o = run(eng, max_tokens=10)
    assert list(o.token_ids) == [5, 6, EOS] and (o.finish_reason, o.stop_reason) == ("stop", None)
    assert o.finished() and o.text == ""  # no tokenizer: no text


def test_ignore_eos():
    eng, _ = engine({tuple(PROMPT): [5, 6, EOS, 7]})
    _, o = run(eng, max_tokens=6, ignore_eos=True)
    assert list(o.token_ids)[:4] == [5, 6, EOS, 7] and len(o.token_ids) == 6 and o.finish_reason == "length"


def test_stop_token_ids_and_secondary_eos():
    eng, _ = engine({tuple(PROMPT): [5, 6, 9, 7]}, eos_token_ids=(EOS, 7))
    _, o = run(eng, max_tokens=10, stop_token_ids=[9])
    assert list(o.token_ids) == [5, 6, 9] and (o.finish_reason, o.stop_reason) == ("stop", 9)
    _, o = run(eng, max_tokens=10)
    assert list(o.token_ids) == [5, 6, 9, 7] and (o.finish_reason, o.stop_reason) == ("stop", 7)


def test_min_tokens_bans_stops_then_allows_them():
    script = {tuple(PROMPT): [EOS, 9, EOS, 5, EOS]}
    eng, _runner = engine(script)
    _, o = run(eng, max_tokens=10, min_tokens=3, stop_token_ids=[9])
    # outputs 0..2 had EOS and 9 banned (the fake runner steps to the next id); output 3 is free
    assert list(o.token_ids) == [1, 10, 1, 5, EOS]
    assert o.finish_reason == "stop"


def test_min_tokens_banned_ids_in_batch():
    eng, _ = engine(eos_token_ids=(EOS, 3))
    eng.add_request("r", PROMPT, SamplingParams(min_tokens=2, max_tokens=5, stop_token_ids=[9]))
    banned = []
    while eng.has_unfinished_requests():
        batch = eng.scheduler.schedule()
        banned.append(batch.seqs[0].banned_token_ids)
        eng.scheduler.update(batch, eng.runner.execute(batch))
        if not eng.scheduler.has_unfinished():
            break
    assert banned[:2] == [(EOS, 3, 9)] * 2 and banned[2] == ()
    eng2, _ = engine()
    eng2.add_request(
        "r", PROMPT, SamplingParams(min_tokens=2, max_tokens=5, ignore_eos=True, stop_token_ids=[9])
    )
    # vLLM's all_stop_token_ids keep the EOS under ignore_eos: min_tokens still bans it
    assert eng2.scheduler.schedule().seqs[0].banned_token_ids == (EOS, 9)


def test_max_tokens_and_max_model_len():
    eng, _ = engine(max_model_len=9)
    _, o = run(eng, max_tokens=3)
    assert list(o.token_ids) == reference_greedy(PROMPT, 3) and o.finish_reason == "length"
    eng, _ = engine(max_model_len=9, eos_token_ids=None)
    _, o = run(eng, max_tokens=100)
    assert len(o.token_ids) == 4 and o.finish_reason == "length"  # prompt 5 + 4 = max_model_len
    eng, _ = engine(max_model_len=9, eos_token_ids=None)
    _, o = run(eng, max_tokens=None)
    assert len(o.token_ids) == 4 and o.finish_reason == "length"


def text_script(tok, text, prompt=PROMPT):
    return {tuple(prompt): tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]}


def test_text_and_eos_excluded():
    tok = bpe_tokenizer()
    eng, _ = engine(text_script(tok, "Hello wörld 😀"), tokenizer=tok, eos_token_ids=(tok.eos_token_id,))
    _, o = run(eng, max_tokens=50, skip_special_tokens=False)
    assert o.text == "Hello wörld 😀" and o.token_ids[-1] == tok.eos_token_id and o.finish_reason == "stop"


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_through_engine(include):
    tok = bpe_tokenizer()
    eng, _ = engine(
        text_script(tok, "The quick STOP brown fox"), tokenizer=tok, eos_token_ids=(tok.eos_token_id,)
    )
    _, o = run(eng, max_tokens=50, stop=["STOP"], include_stop_str_in_output=include)
    assert o.text == ("The quick STOP" if include else "The quick ")
    assert (o.finish_reason, o.stop_reason) == ("stop", "STOP")
    # generation stopped at the token that completed the stop string; it is kept in token_ids
    assert tok.decode(o.token_ids).startswith("The quick STOP") and len(tok.decode(o.token_ids)) < 20


def test_stop_string_overrides_length():
    tok = bpe_tokenizer()
    script = text_script(tok, "The quick STOP")
    n = len(script[tuple(PROMPT)]) - 1
    eng, _ = engine(script, tokenizer=tok, eos_token_ids=(tok.eos_token_id,))
    _, o = run(eng, max_tokens=n, stop=["STOP"])
    assert (o.finish_reason, o.stop_reason, o.text) == ("stop", "STOP", "The quick ")


def test_detokenize_false_and_no_tokenizer():
    tok = bpe_tokenizer()
    eng, _ = engine(text_script(tok, "Hello"), tokenizer=tok, eos_token_ids=(tok.eos_token_id,))
    _, o = run(eng, max_tokens=50, detokenize=False)
    assert o.text == "" and o.finish_reason == "stop"
    eng, _ = engine(eos_token_ids=None)
    with pytest.raises(ValueError, match="stop strings.*tokenizer"):
        eng.add_request("r", PROMPT, SamplingParams(stop=["x"]))
    with pytest.raises(ValueError, match="bad_words.*tokenizer"):
        eng.add_request("r", PROMPT, SamplingParams(bad_words=["x"]))
    assert not eng.has_unfinished_requests()


def test_bad_words_tokenized_by_engine():
    tok = bpe_tokenizer()
    eng, _ = engine(tokenizer=tok, eos_token_ids=(tok.eos_token_id,))
    params = SamplingParams(bad_words=["Hello", "world"], max_tokens=2)
    eng.add_request("r", PROMPT, params)
    ids = params.bad_words_token_ids
    assert tok.encode("Hello", add_special_tokens=False) in ids
    assert (
        tok.encode(" world", add_special_tokens=False) in ids
        or tok.encode("world", add_special_tokens=False) in ids
    )


def test_logprobs_and_cumulative():
    tok = bpe_tokenizer()
    eng, _ = engine(tokenizer=tok, eos_token_ids=None)
    req, o = run(eng, max_tokens=4, logprobs=2)
    assert len(o.logprobs) == 4
    for t, d in zip(o.token_ids, o.logprobs):
        assert (
            next(iter(d)) == t and d[t].logprob == fake_logprob(t) and d[t].decoded_token == tok.decode([t])
        )
        assert {0, 1} <= set(d)
    assert o.cumulative_logprob == pytest.approx(sum(fake_logprob(t) for t in o.token_ids))
    assert req.prompt_logprobs is None
    eng, _ = engine(eos_token_ids=None)
    _, o = run(eng, max_tokens=4)
    assert o.logprobs is None and o.cumulative_logprob is None


@pytest.mark.parametrize("budget,blocks", [(32, 64), (3, 64), (4, 5)])
def test_prompt_logprobs_complete_under_chunking_preemption_and_caching(budget, blocks):
    prompt = list(range(1, 15))
    eng, _ = engine(eos_token_ids=None, max_num_batched_tokens=budget, num_blocks=blocks, max_num_seqs=2)
    eng.add_request("warm", prompt, SamplingParams(max_tokens=2))  # fills the prefix cache
    eng.add_request("other", list(range(20, 30)), SamplingParams(max_tokens=6))
    eng.add_request("r", prompt, SamplingParams(max_tokens=3, prompt_logprobs=1, n=2))
    outs = {}
    while eng.has_unfinished_requests():
        outs.update({o.request_id: o for o in eng.step() if o.finished})
    pl = outs["r"].prompt_logprobs
    assert pl[0] is None and len(pl) == len(prompt)
    for tok_id, d in zip(prompt[1:], pl[1:]):
        assert next(iter(d)) == tok_id and d[tok_id].logprob == fake_logprob(tok_id)
    assert outs["r"].num_cached_tokens == 0  # prompt logprobs need every position computed


def test_bad_input_errors_name_the_request():
    eng, _ = engine(max_model_len=16, num_blocks=3)
    cases = [
        ([], ValueError, "cannot be empty"),
        ([1, VOCAB], ValueError, f"Token id {VOCAB} is out of vocabulary"),
        ([-1, 2], ValueError, "Token id -1 is out of vocabulary"),
        (list(range(1, 18)), ValueError, r"length 17\) is longer than the maximum model length of 16"),
        (list(range(1, 17)), ValueError, "plus the number of requested output tokens"),
        ([1, 2.5], TypeError, "must be ints"),
        (b"abc", TypeError, "list of token ids"),
    ]
    for prompt, exc, msg in cases:
        with pytest.raises(exc, match=msg) as e:
            eng.add_request("bad", prompt, SamplingParams())
        assert "'bad'" in str(e.value)
    with pytest.raises(ValueError, match="needs 4 KV-cache blocks"):
        eng.add_request("big", [1] * 10, SamplingParams(max_tokens=5))
    with pytest.raises(ValueError, match=r"stop_token_ids contain out-of-vocab"):
        eng.add_request("bad", [1], SamplingParams(stop_token_ids=[VOCAB]))
    with pytest.raises(ValueError, match="logit_bias contain out-of-vocab"):
        eng.add_request("bad", [1], SamplingParams(logit_bias={VOCAB + 1: 1.0}))
    with pytest.raises(ValueError, match="allowed_token_ids contain out-of-vocab"):
        eng.add_request("bad", [1], SamplingParams(allowed_token_ids=[1, 99]))
    with pytest.raises(TypeError, match="SamplingParams"):
        eng.add_request("bad", [1], {"temperature": 0})
    with pytest.raises(TypeError, match="request_id"):
        eng.add_request(3, [1], SamplingParams())
    assert not eng.has_unfinished_requests()
    # the engine still works; numpy prompts are accepted; duplicate ids are rejected
    import numpy as np

    eng.add_request("ok", np.array([1, 2, 3]), SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="already"):
        eng.add_request("ok", [1], SamplingParams())
    outs = []
    while eng.has_unfinished_requests():
        outs += [o for o in eng.step() if o.finished]
    assert len(outs[0].outputs[0].token_ids) == 2


def test_engine_constructor_errors():
    r = CacheCheckingRunner(4, 4)
    kw = {
        "num_blocks": 4, "block_size": 4, "max_num_seqs": 4, "max_num_batched_tokens": 8, "max_model_len": 16, "vocab_size": 8
    }
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        LLMEngine(r, **{**kw, "max_num_batched_tokens": 2})
    with pytest.raises(ValueError, match="block_size"):
        LLMEngine(r, **{**kw, "block_size": 0})
    with pytest.raises(TypeError, match="execute"):
        LLMEngine(object(), **kw)
    with pytest.raises(ValueError, match="eos_token_ids"):
        LLMEngine(r, **kw, eos_token_ids=[8])


def test_request_output_repr():
    eng, _ = engine()
    req, _o = run(eng, max_tokens=2)
    assert repr(req).startswith(
        "RequestOutput(request_id=r, prompt=None, prompt_token_ids=[10, 11, 12, 13, 14]"
    )
    assert "CompletionOutput(index=0, text=''" in repr(req)
