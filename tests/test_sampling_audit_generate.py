"""vLLM's documented ``LLM.generate`` semantics on a tiny random Llama, beyond tests/test_vllm_audit_*.py: stop
and EOS edge cases, the model's extra EOS ids, streamed text around stop strings, n > 1 samples, logprob details
(``logprobs=0``, ``prompt_logprobs=0``, exact ranks), prefix caching with prompt logprobs, and output types."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hf_models import hf_logprobs, save_tiny_model, save_tokenizer_with_template
from vllm_detokenize import vllm_fast_text

from jaxllm import LLM, RequestOutputKind, SamplingParams

EOS, EXTRA_EOS = 0, 7
G = {"use_tqdm": False}
GREEDY = {"temperature": 0.0, "ignore_eos": True}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampling_audit")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=EOS, bos_token_id=None)
    save_tokenizer_with_template(path)
    # a second EOS id, as chat models' generation_config.json list one (e.g. an end-of-turn token)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [EOS, EXTRA_EOS]}))
    llm = LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, max_model_len=64, enforce_eager=True,
              enable_prefix_caching=True)
    return llm, model


def one(llm, prompt="a b", **kw):
    return llm.generate(prompt, SamplingParams(**kw), **G)[0].outputs[0]


def test_min_tokens_bans_eos_even_with_ignore_eos(setup):
    llm, _ = setup
    c = one(llm, max_tokens=5, min_tokens=3, ignore_eos=True, logit_bias={EOS: 100.0})
    # vLLM's all_stop_token_ids hold the EOS whatever ignore_eos says: banned for 3 tokens, then it runs on
    assert EOS not in c.token_ids[:3] and c.token_ids[3:] == [EOS, EOS] and c.finish_reason == "length"


def test_the_generation_configs_extra_eos_is_a_stop_token(setup):
    llm, _ = setup
    c = one(llm, max_tokens=5, logit_bias={EXTRA_EOS: 100.0})
    assert (c.finish_reason, c.stop_reason, c.token_ids) == ("stop", EXTRA_EOS, [EXTRA_EOS])
    c = one(llm, max_tokens=5, logit_bias={EOS: 100.0})
    assert (c.finish_reason, c.stop_reason, c.token_ids) == ("stop", None, [EOS])  # the primary EOS
    c = one(llm, max_tokens=3, logit_bias={EXTRA_EOS: 100.0}, ignore_eos=True)
    assert (c.finish_reason, c.token_ids) == ("length", [EXTRA_EOS] * 3)
    c = one(llm, max_tokens=5, min_tokens=2, logit_bias={EXTRA_EOS: 100.0})
    assert EXTRA_EOS not in c.token_ids[:2] and c.token_ids[-1] == EXTRA_EOS and len(c.token_ids) == 3


def test_stop_token_text_follows_include_stop_str_in_output(setup):
    llm, _ = setup
    bias = {EOS: 100.0}
    c = one(llm, max_tokens=3, logit_bias=bias, skip_special_tokens=False)
    assert (c.text, c.token_ids) == ("", [EOS])  # the EOS ends the output: its text is left out ...
    c = one(llm, max_tokens=3, logit_bias=bias, skip_special_tokens=False, include_stop_str_in_output=True)
    assert (c.text, c.token_ids, c.stop_reason) == ("<eos>", [EOS], None)  # ... unless asked for
    c = one(llm, max_tokens=3, logit_bias=bias, include_stop_str_in_output=True)
    assert c.text == ""  # a special token has no text when special tokens are skipped


def _stop_spanning_tokens(tok, ids):
    """A 3-character stop string of the text of ``ids`` whose first character comes from an earlier token than
    its last, with the index of the token that completes it (None if the text has none)."""
    ends = [len(tok.decode(ids[:k + 1])) for k in range(len(ids))]
    text = tok.decode(ids)
    for start in range(len(text) - 3):
        first = next(k for k, e in enumerate(ends) if e > start)
        last = next(k for k, e in enumerate(ends) if e >= start + 3)
        stop = text[start:start + 3]
        if last > first and text.find(stop) == start and "\ufffd" not in stop:
            return stop, last
    return None, None


def _stream(llm, request_id, prompt, params):
    engine = llm.llm_engine
    engine.add_request(request_id, prompt, params)
    outs = []
    while engine.has_unfinished_requests():
        outs += [o.outputs[0] for o in engine.step() if o.request_id == request_id]
    return outs


def test_streamed_text_never_shows_a_stop_string_it_later_cuts(setup):
    llm, _ = setup
    tok = llm.get_tokenizer()
    full = one(llm, **GREEDY, max_tokens=24)
    stop, last = _stop_spanning_tokens(tok, full.token_ids)
    assert stop is not None, "the greedy text has no stop string spanning two tokens"
    final = one(llm, **GREEDY, max_tokens=24, stop=stop)
    assert final.stop_reason == stop and len(final.token_ids) == last + 1
    cumulative = _stream(llm, "cum", "a b", SamplingParams(**GREEDY, max_tokens=24, stop=stop))
    assert cumulative[-1].text == final.text and cumulative[-1].finish_reason == "stop"
    for c in cumulative:  # vLLM holds back len(stop) - 1 characters while the sequence runs
        assert final.text.startswith(c.text) and stop not in c.text
    deltas = _stream(llm, "delta", "a b", SamplingParams(**GREEDY, max_tokens=24, stop=stop,
                                                         output_kind=RequestOutputKind.DELTA))
    assert "".join(c.text for c in deltas) == final.text
    assert [t for c in deltas for t in c.token_ids] == final.token_ids
    kept = _stream(llm, "kept", "a b", SamplingParams(**GREEDY, max_tokens=24, stop=stop,
                                                      include_stop_str_in_output=True))
    assert kept[-1].text.endswith(stop)  # nothing is held back when the stop string stays in the text
    assert all(kept[-1].text.startswith(c.text) for c in kept)


def test_n_samples_have_their_own_indices_logprobs_and_finish(setup):
    llm, _ = setup
    params = SamplingParams(n=3, seed=9, max_tokens=6, logprobs=2, ignore_eos=True, temperature=1.5)
    out = llm.generate(["x y", "a b"], params, **G)[1]
    assert [c.index for c in out.outputs] == [0, 1, 2] and out.finished
    for c in out.outputs:
        assert len(c.logprobs) == len(c.token_ids) == 6 and c.finish_reason == "length"
        assert math.isclose(c.cumulative_logprob, sum(d[t].logprob for d, t in zip(c.logprobs, c.token_ids)),
                            rel_tol=1e-6)
    # a seeded request gives the same samples beside other requests of other parameters
    mixed = [SamplingParams(max_tokens=3, temperature=0.0), params, SamplingParams(n=2, max_tokens=8, top_k=3)]
    again = llm.generate(["q", "a b", "r s"], mixed, **G)[1]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in out.outputs]
    assert [c.cumulative_logprob for c in again.outputs] == pytest.approx([c.cumulative_logprob for c in out.outputs])


def test_n_samples_stop_independently(setup):
    llm, _ = setup
    stops = list(range(360, 448))  # about one token in five
    params = SamplingParams(n=4, seed=2, max_tokens=12, temperature=2.0, stop_token_ids=stops, ignore_eos=True)
    out = llm.generate("a b", params, **G)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2, 3]
    for c in out.outputs:
        if c.finish_reason == "stop":
            assert c.stop_reason == c.token_ids[-1] in stops and not set(c.token_ids[:-1]) & set(stops)
        else:
            assert c.finish_reason == "length" and len(c.token_ids) == 12
    assert len({len(c.token_ids) for c in out.outputs}) > 1, "every sample stopped at the same length"


def test_zero_logprobs_still_give_the_chosen_token_and_the_sum(setup):
    llm, model = setup
    out = llm.generate("a b c", SamplingParams(max_tokens=4, logprobs=0, prompt_logprobs=0, seed=1, ignore_eos=True),
                       **G)[0]
    c, prompt = out.outputs[0], out.prompt_token_ids
    assert [list(d) for d in c.logprobs] == [[t] for t in c.token_ids]
    assert isinstance(c.cumulative_logprob, float)
    assert math.isclose(c.cumulative_logprob, sum(d[t].logprob for d, t in zip(c.logprobs, c.token_ids)),
                        rel_tol=1e-6)
    assert out.prompt_logprobs[0] is None
    assert [list(d) for d in out.prompt_logprobs[1:]] == [[t] for t in prompt[1:]]
    ref = hf_logprobs(model, prompt + c.token_ids).numpy()
    for pos, d in enumerate(out.prompt_logprobs[1:], 1):  # exact ranks and values, against transformers
        row, t = ref[pos - 1], prompt[pos]
        assert abs(d[t].logprob - row[t]) < 1e-4 and d[t].rank == 1 + int((row > row[t]).sum())
    for i, (d, t) in enumerate(zip(c.logprobs, c.token_ids)):
        row = ref[len(prompt) - 1 + i]
        assert abs(d[t].logprob - row[t]) < 1e-4 and d[t].rank == 1 + int((row > row[t]).sum())


def test_logprob_values_types_and_decoded_tokens(setup):
    llm, _ = setup
    tok = llm.get_tokenizer()
    out = llm.generate("a b", SamplingParams(max_tokens=3, logprobs=3, prompt_logprobs=1, seed=4,
                                             logit_bias={EOS: 5.0}, ignore_eos=True, skip_special_tokens=False), **G)[0]
    c = out.outputs[0]
    assert all(type(t) is int for t in c.token_ids) and type(c.cumulative_logprob) is float
    assert all(type(t) is int for t in out.prompt_token_ids)
    for d in [*c.logprobs, *out.prompt_logprobs[1:]]:
        for tid, lp in d.items():
            assert type(tid) is int and type(lp.logprob) is float and type(lp.rank) is int
            assert lp.decoded_token == tok.decode([tid])  # special tokens keep their text here
    off = llm.generate("a b", SamplingParams(max_tokens=2, logprobs=1, prompt_logprobs=1, detokenize=False), **G)[0]
    assert all(lp.decoded_token is None for d in [*off.outputs[0].logprobs, *off.prompt_logprobs[1:]]
               for lp in d.values())
    assert off.outputs[0].text == "" and len(off.outputs[0].token_ids) >= 1


def test_prompt_logprobs_are_whole_when_the_prompt_is_cached(setup):
    llm, _ = setup
    prompt = "a b c d e f g h i j k l m n"
    first = llm.generate(prompt, SamplingParams(max_tokens=1, prompt_logprobs=1), **G)[0]
    cached = llm.generate(prompt, SamplingParams(max_tokens=1), **G)[0]
    assert cached.num_cached_tokens > 0  # the prompt's blocks are in the prefix cache
    again = llm.generate(prompt, SamplingParams(max_tokens=1, prompt_logprobs=1), **G)[0]
    assert len(again.prompt_logprobs) == len(again.prompt_token_ids)
    assert again.num_cached_tokens == 0  # vLLM's skip_reading_prefix_cache for prompt logprobs
    for a, b in zip(first.prompt_logprobs[1:], again.prompt_logprobs[1:]):
        assert list(a) == list(b) and np.allclose([x.logprob for x in a.values()], [x.logprob for x in b.values()],
                                                  atol=1e-5)


def test_generate_returns_final_outputs_whatever_the_output_kind(setup):
    llm, _ = setup
    ids_before = [o.request_id for o in llm.generate(["a", "b"], SamplingParams(max_tokens=1), **G)]
    params = SamplingParams(**GREEDY, max_tokens=5, output_kind=RequestOutputKind.DELTA)
    out = llm.generate(["a b", "c"], params, **G)
    assert params.output_kind == RequestOutputKind.FINAL_ONLY  # vLLM's LLM sets it on the given params
    assert out[0].outputs[0].token_ids == one(llm, **GREEDY, max_tokens=5).token_ids and out[0].finished
    # request ids count on across calls, as vLLM's LLM counter does
    assert [int(o.request_id) for o in out] == [int(ids_before[-1]) + 1, int(ids_before[-1]) + 2]


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("spaces", [True, False])
def test_text_with_special_tokens_is_vllms(setup, skip, spaces):
    llm, _ = setup
    tok = llm.get_tokenizer()
    bias = {EOS: 3.5, 1: 3.5, 420: 3.5}  # <eos>, <pad> and <extra> come up now and then
    params = SamplingParams(max_tokens=16, seed=5, ignore_eos=True, logit_bias=bias, skip_special_tokens=skip,
                            spaces_between_special_tokens=spaces)
    out = llm.generate("a b", params, **G)[0]
    c = out.outputs[0]
    assert {EOS, 1, 420} & set(c.token_ids), c.token_ids
    assert c.text == vllm_fast_text(tok, out.prompt_token_ids, c.token_ids, skip, spaces)


def test_stream_interval_batches_streamed_tokens(setup):
    llm, _ = setup
    params = SamplingParams(**GREEDY, max_tokens=8, stream_interval=3, output_kind=RequestOutputKind.DELTA)
    deltas = _stream(llm, "interval", "a b", params)
    # the first output at once, then every 3 new tokens, and the final one whatever is left
    assert [len(c.token_ids) for c in deltas] == [1, 3, 3, 1]
    assert [t for c in deltas for t in c.token_ids] == one(llm, **GREEDY, max_tokens=8).token_ids
    every = _stream(llm, "every", "a b", SamplingParams(**GREEDY, max_tokens=4, output_kind=RequestOutputKind.DELTA))
    assert [len(c.token_ids) for c in every] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="stream_interval must be at least 1, got 0"):
        SamplingParams(stream_interval=0)


def test_a_stop_string_ending_inside_a_token_cuts_that_token(setup):
    llm, _ = setup
    tok = llm.get_tokenizer()
    full = one(llm, **GREEDY, max_tokens=24)
    ends = {len(tok.decode(full.token_ids[:k + 1])) for k in range(len(full.token_ids))}
    text = full.text
    start, end = next((s, s + 2) for s in range(len(text) - 2)
                      if s + 2 not in ends and text.find(text[s:s + 2]) == s and "\ufffd" not in text[s:s + 3])
    stop = text[start:end]
    cut = one(llm, **GREEDY, max_tokens=24, stop=stop)
    kept = one(llm, **GREEDY, max_tokens=24, stop=stop, include_stop_str_in_output=True)
    assert (cut.text, cut.stop_reason) == (text[:start], stop)
    assert (kept.text, kept.stop_reason) == (text[:end], stop)  # the rest of the completing token is dropped
    assert kept.token_ids == cut.token_ids and len(tok.decode(kept.token_ids)) > end
