"""LLM.beam_search: equal to transformers' beam search, vLLM's EOS and length-penalty rules, beams sharing
KV blocks through the prefix cache, and input validation.

Which transformers settings match vLLM's algorithm: ``generate(num_beams=W, num_return_sequences=W,
do_sample=False, length_penalty=0.0, early_stopping="never")`` is the canonical beam search (transformers'
own docstring says so): it keeps the W best of the top 2W candidates each step and stops only when no live
beam can still win, which returns what running all ``max_tokens`` steps (vLLM) returns. Equality holds while
no beam ends on EOS (``ignore_eos=True`` here, ``eos_token_id=None`` there). Once EOS ends beams the two
differ by design: vLLM finishes every EOS among a beam's own top 2W tokens (transformers only an EOS ranked
in the W best of all candidates), and vLLM's length penalty counts the prompt (transformers' counts
generated tokens). Those cases are checked against ``vllm_beam_search`` below, vLLM's algorithm written
out over transformers' logprobs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hf_models import hf_greedy, hf_logprobs, save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, SamplingParams
from jaxllm.beam_search import get_beam_search_score
from jaxllm.lora import LoRARequest
from jaxllm.sampling_params import BeamSearchParams

VOCAB = 448
EOS = 0
PAD = VOCAB - 1  # for transformers' padding of finished sequences only


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama whose EOS logit is scaled up 3x, so that EOS often is among a beam's best tokens."""
    path = tmp_path_factory.mktemp("beam_llama")
    hf = save_tiny_model(path, "LlamaForCausalLM", vocab_size=VOCAB, eos_token_id=EOS, bos_token_id=None)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 3.0
    hf.save_pretrained(path)
    save_tokenizer_with_template(path)
    return path, hf


@pytest.fixture(scope="module")
def llm(model_dir):
    """Warmed up (every bucket compiled at start-up): beam search must not compile anything more."""
    return LLM(str(model_dir[0]), max_num_seqs=8, max_num_batched_tokens=64)


@pytest.fixture(autouse=True)
def no_compilation_during_beam_search(request):
    if "llm" not in request.fixturenames:
        yield
        return
    runner = request.getfixturevalue("llm").llm_engine.runner
    before = runner.num_compilations
    yield
    assert runner.num_compilations == before


def random_prompts(n, lo=3, hi=40, seed=0):
    rng = np.random.RandomState(seed)
    return [[int(t) for t in rng.randint(1, VOCAB - 1, rng.randint(lo, hi))] for _ in range(n)]


def hf_beam_search(hf, prompt, width, max_tokens):
    config = transformers.GenerationConfig(
        num_beams=width, num_return_sequences=width, do_sample=False, max_new_tokens=max_tokens,
        length_penalty=0.0, early_stopping="never", eos_token_id=None, pad_token_id=PAD, output_scores=True,
        return_dict_in_generate=True)
    hf.generation_config.eos_token_id = None  # else generate() falls back to the model's EOS
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), generation_config=config)
    return out.sequences.tolist(), out.sequences_scores.tolist()


def vllm_beam_search(hf, prompt, width, max_tokens, length_penalty, ignore_eos=False):
    """vLLM's beam search (``LLM.beam_search``) written out over transformers' logprobs: (tokens,
    cum_logprob, finish_reason) of the ``width`` best beams."""
    def key(beam):
        return get_beam_search_score(beam[0], beam[1], EOS, length_penalty)

    beams, done = [(list(prompt), 0.0, "length")], []
    for _ in range(max_tokens):
        candidates = []
        for tokens, cum, _ in beams:
            top = torch.topk(hf_logprobs(hf, tokens)[-1], 2 * width)
            for lp, t in zip(top.values.tolist(), top.indices.tolist()):
                if t == EOS and not ignore_eos:
                    done.append((tokens + [t], cum + lp, "stop"))
                else:
                    candidates.append((tokens + [t], cum + lp, "length"))
        beams = sorted(candidates, key=key, reverse=True)[:width]
    return sorted(done + beams, key=key, reverse=True)[:width]


@pytest.mark.parametrize("width", [2, 4])
def test_equals_transformers_beam_search(llm, model_dir, width):
    _, hf = model_dir
    prompts = random_prompts(3, seed=width)
    params = BeamSearchParams(beam_width=width, max_tokens=7, ignore_eos=True, length_penalty=0.0)
    outs = llm.beam_search([{"prompt_token_ids": p} for p in prompts], params)
    for prompt, out in zip(prompts, outs):
        hf_seqs, hf_scores = hf_beam_search(hf, prompt, width, 7)
        assert [s.tokens for s in out.sequences] == hf_seqs
        np.testing.assert_allclose([s.cum_logprob for s in out.sequences], hf_scores, rtol=1e-5, atol=1e-4)
        for s in out.sequences:
            assert s.finish_reason == "length" and s.stop_reason is None and len(s.logprobs) == 7
            assert all(s.tokens[len(prompt) + i] in lps for i, lps in enumerate(s.logprobs))
            assert len(s.logprobs[0]) >= 2 * width


def test_width_one_is_greedy(llm, model_dir):
    _, hf = model_dir
    prompt = random_prompts(1, seed=7)[0]
    out = llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(1, 6, ignore_eos=True))[0]
    assert out.sequences[0].tokens == prompt + hf_greedy(hf, prompt, 6)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_eos_and_length_penalty_follow_vllm(llm, model_dir, length_penalty):
    _, hf = model_dir
    prompts = random_prompts(3, seed=0)
    params = BeamSearchParams(3, 6, length_penalty=length_penalty)
    outs = llm.beam_search([{"prompt_token_ids": p} for p in prompts], params, concurrency_limit=2)
    reasons = []
    for prompt, out in zip(prompts, outs):
        want = vllm_beam_search(hf, prompt, 3, 6, length_penalty)
        assert [(s.tokens, s.finish_reason) for s in out.sequences] == [(t, r) for t, _, r in want]
        np.testing.assert_allclose([s.cum_logprob for s in out.sequences], [c for _, c, _ in want], atol=1e-4)
        scores = [get_beam_search_score(s.tokens, s.cum_logprob, EOS, length_penalty) for s in out.sequences]
        assert scores == sorted(scores, reverse=True)
        for s in out.sequences:
            reasons.append(s.finish_reason)
            if s.finish_reason == "stop":  # finished beams are kept, EOS included in tokens, not in text
                assert s.tokens[-1] == EOS and s.stop_reason == EOS
    assert {"stop", "length"} <= set(reasons)  # the case covers both endings


def test_ignore_eos_extends_through_eos(llm):
    prompt = random_prompts(3, seed=0)[2]
    stopped = llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(3, 6))[0]
    assert any(s.finish_reason == "stop" for s in stopped.sequences)
    out = llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(3, 6, ignore_eos=True))[0]
    assert all(len(s.tokens) == len(prompt) + 6 and s.finish_reason == "length" for s in out.sequences)


def test_beams_share_prompt_blocks_through_the_prefix_cache(llm, monkeypatch):
    """Every step's requests take the prompt's full blocks (and blocks of common beam prefixes) from the prefix
    cache: the same physical blocks, ref-counted once per beam, and only each beam's tail is computed."""
    engine = llm.llm_engine
    bs = engine.block_size
    prompt = random_prompts(1, lo=3 * bs + 2, hi=3 * bs + 3, seed=11)[0]  # 3 full blocks + 2 tokens
    seen = []
    schedule = engine.scheduler.schedule

    def recording_schedule():
        batch = schedule()
        seen.append([(list(s.block_table), s.start, s.num_new_tokens, len(s.token_ids)) for s in batch.seqs])
        seen[-1] = [(t, st, n, ln, [engine.block_manager.ref_counts[b] for b in t[:3]])
                    for t, st, n, ln in seen[-1]]
        return batch

    monkeypatch.setattr(engine.scheduler, "schedule", recording_schedule)
    computed0, cached0 = engine.stats.num_scheduled_tokens, engine.stats.num_cached_tokens
    width, steps = 4, 5
    llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(width, steps, ignore_eos=True))
    later = [e for batch in seen for e in batch if e[3] > len(prompt)]  # requests of steps 2..5
    assert len(later) == width * (steps - 1)
    prompt_blocks = {tuple(t[:3]) for t, *_ in later}
    assert len(prompt_blocks) == 1  # one physical copy of the prompt's full blocks for all beams
    assert all(st >= 3 * bs and n <= bs for _, st, n, _, _ in later)  # only the tail is computed
    assert any(max(refs) > 1 for *_, refs in later)  # beams of one step hold the shared blocks together
    computed = engine.stats.num_scheduled_tokens - computed0
    full = len(prompt) + sum(len(prompt) + k for k in range(1, steps)) * width
    assert computed <= len(prompt) + (steps - 1) * width * bs < full / 2
    assert engine.stats.num_cached_tokens - cached0 >= (steps - 1) * width * 3 * bs


def test_prompt_forms_and_text(llm):
    tok = llm.get_tokenizer()
    text = "The quick brown fox"
    params = BeamSearchParams(2, 4)
    a, b, c = llm.beam_search([text, {"prompt": text}, {"prompt_token_ids": tok(text).input_ids}], params)
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences] == [s.tokens for s in c.sequences]
    for s in a.sequences:
        assert s.tokens[: len(tok(text).input_ids)] == tok(text).input_ids
        ends_on_eos = s.finish_reason == "stop"
        assert s.text == tok.decode(s.tokens[:-1] if ends_on_eos else s.tokens, skip_special_tokens=True)


def test_bad_input_raises_before_device_work(llm):
    engine = llm.llm_engine
    steps0 = engine.stats.num_steps
    good = {"prompt_token_ids": [1, 2, 3]}
    cases = [
        (([good], BeamSearchParams(11, 4)), ValueError, "beam_width=11"),
        (([good], SamplingParams()), TypeError, "BeamSearchParams"),
        (([good, {"prompt_token_ids": []}], BeamSearchParams(2, 4)), ValueError, "prompt 1"),
        (([good, {"prompt_token_ids": [VOCAB]}], BeamSearchParams(2, 4)), ValueError, "out of vocabulary"),
        (([good, 5], BeamSearchParams(2, 4)), TypeError, "prompt 1"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            llm.beam_search(*args)
    with pytest.raises(ValueError, match="concurrency_limit"):
        llm.beam_search([good], BeamSearchParams(2, 4), concurrency_limit=0)
    with pytest.raises(TypeError, match="lora_request"):
        llm.beam_search([good], BeamSearchParams(2, 4), lora_request=object())
    with pytest.raises(ValueError, match="enable_lora=True"):  # this LLM has LoRA off
        llm.beam_search([good], BeamSearchParams(2, 4), lora_request=LoRARequest("a", 1, "/nowhere"))
    assert engine.stats.num_steps == steps0 and not engine.has_unfinished_requests()
    assert len(llm.beam_search([good], BeamSearchParams(2, 2))[0].sequences) == 2  # still usable


@pytest.mark.parametrize("kwargs, match", [
    ({"beam_width": 0, "max_tokens": 4}, "beam_width must be at least 1"),
    ({"beam_width": 2, "max_tokens": 0}, "max_tokens must be at least 1"),
    ({"beam_width": 2, "max_tokens": 4, "temperature": -0.5}, "temperature"),
    ({"beam_width": 2, "max_tokens": 4, "length_penalty": float("nan")}, "length_penalty"),
    ({"beam_width": 2, "max_tokens": 4, "structured_outputs": {"json": {}}}, "structured_outputs"),
])
def test_beam_search_params_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BeamSearchParams(**kwargs)


def test_beam_search_params_types_and_positional():
    assert BeamSearchParams(3, 8) == BeamSearchParams(beam_width=3, max_tokens=8)
    for kwargs in ({"beam_width": 2.0, "max_tokens": 4}, {"beam_width": 2, "max_tokens": "4"},
                   {"beam_width": 2, "max_tokens": 4, "ignore_eos": 1}):
        with pytest.raises(TypeError):
            BeamSearchParams(**kwargs)


def test_beams_end_by_length_at_max_model_len(llm):
    room = 2  # the prompt leaves room for two tokens: the third step has no beam left to extend
    max_len = llm.llm_engine.max_model_len
    prompt = (random_prompts(1, seed=3)[0] * max_len)[: max_len - room]
    out = llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(2, 5, ignore_eos=True))[0]
    assert [len(s.tokens) for s in out.sequences] == [max_len, max_len]
    assert all(s.finish_reason == "length" and len(s.logprobs) == room for s in out.sequences)


def test_temperature_adds_the_sampled_token_and_progress_bar_callable(llm):
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    prompts = [{"prompt_token_ids": p} for p in random_prompts(3, seed=5)]
    params = BeamSearchParams(2, 4, ignore_eos=True, temperature=1.0)
    outs = llm.beam_search(prompts, params, use_tqdm=Bar, concurrency_limit=2)
    assert len(bars) == 1 and bars[0].closed and bars[0].n == bars[0].kwargs["total"] == 4 * 2  # 2 groups
    for out in outs:
        assert len(out.sequences) == 2
        scores = [get_beam_search_score(s.tokens, s.cum_logprob, EOS, 1.0) for s in out.sequences]
        assert scores == sorted(scores, reverse=True)
        for s in out.sequences:  # the chosen token's logprob is the one its step reported
            steps = zip(s.tokens[-4:], s.logprobs)
            assert s.cum_logprob == pytest.approx(sum(lps[t].logprob for t, lps in steps), abs=1e-4)
    with pytest.raises(TypeError, match="use_tqdm"):
        llm.beam_search(prompts, params, use_tqdm="yes")


class _DigitsTokenizer:
    """decode() spells every id out: this tokenizer's EOS (id 0) is not a special token, so its text shows."""

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)


def test_text_drops_the_eos_unless_include_stop_str_in_output():
    from jaxllm.beam_search import (
        BeamSearchInstance,
        BeamSearchSequence,
        _finish,
        create_sort_beams_key_function,
    )

    key = create_sort_beams_key_function(EOS, 1.0)
    for include, want in ((False, "5 6"), (True, "5 6 0")):
        inst = BeamSearchInstance([5])
        inst.beams = [BeamSearchSequence([5, 7, 8], [{}, {}], -9.0)]
        inst.completed = [BeamSearchSequence([5, 6, EOS], [{}, {}], -1.0, finish_reason="stop", stop_reason=EOS)]
        params = BeamSearchParams(2, 2, include_stop_str_in_output=include)
        stop, length = _finish(inst, params, EOS, key, _DigitsTokenizer()).sequences
        assert (stop.text, stop.tokens, stop.finish_reason) == (want, [5, 6, EOS], "stop")
        assert (length.text, length.finish_reason, length.stop_reason) == ("5 7 8", "length", None)
