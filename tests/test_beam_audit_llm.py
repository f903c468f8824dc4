"""Beam search audit against vLLM's ``LLM.beam_search`` and transformers' ``generate(num_beams=...)``.

Where the two agree (a model without an EOS id): transformers' default beam search (``early_stopping=False``)
and ``early_stopping=True`` with any ``length_penalty`` return vLLM's beams, because every beam has the same
length, so the penalty divides all scores alike (transformers reports ``cum_logprob / generated_len **
length_penalty`` as ``sequences_scores``). Where they differ by design tests/llm/test_beam_search.py checks vLLM's
algorithm: EOS ends beams; the penalty's length counts the prompt; and vLLM's score does not count a beam's
last token when it is EOS even under ``ignore_eos``, so with ``length_penalty != 0`` a beam that just passed
through EOS ranks lower than transformers ranks it (``test_ignore_eos_still_discounts_a_trailing_eos``). Here also: the scores are the raw logprobs at any
temperature (vLLM's ``logprobs_mode="raw_logprobs"``), ``concurrency_limit`` does not change results (vLLM's
own test), typed prompts, the output objects, and EOS-finished beams kept past later steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hf_models import hf_logprobs, save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, TextPrompt, TokensPrompt
from jaxllm.beam_search import BeamSearchOutput, BeamSearchSequence, get_beam_search_score
from jaxllm.outputs import Logprob
from jaxllm.sampling_params import BeamSearchParams

VOCAB = 448  # the tests' byte-level BPE tokenizer
EOS = 0
PROMPTS = [[17, 203, 5, 88, 41, 9], [300, 12, 12, 77, 140, 2, 63, 99, 18, 250, 31], [4, 150, 96]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("beam_audit")
    hf = save_tiny_model(path, "LlamaForCausalLM", vocab_size=VOCAB, eos_token_id=EOS, bos_token_id=None, seed=3)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 3.0  # EOS is often among a beam's best candidates
    hf.save_pretrained(path)
    save_tokenizer_with_template(path)
    return path, hf


@pytest.fixture(scope="module")
def llm(model):
    return LLM(str(model[0]), max_num_seqs=8, max_num_batched_tokens=64, enforce_eager=True)


@pytest.fixture(scope="module")
def no_eos(tmp_path_factory):
    """A model without an EOS id (config and tokenizer): no beam can end, as transformers with eos_token_id=None."""
    path = tmp_path_factory.mktemp("beam_audit_no_eos")
    hf = save_tiny_model(path, "LlamaForCausalLM", vocab_size=VOCAB, eos_token_id=None, bos_token_id=None, seed=3)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=8, max_num_batched_tokens=64, enforce_eager=True)
    assert llm.llm_engine.eos_token_ids == ()
    return hf, llm


def hf_beams(hf, prompt, width, max_tokens, length_penalty, early_stopping):
    config = transformers.GenerationConfig(
        num_beams=width, num_return_sequences=width, do_sample=False, max_new_tokens=max_tokens,
        length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=None, pad_token_id=VOCAB - 1,
        output_scores=True, return_dict_in_generate=True)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), generation_config=config)
    return out.sequences.tolist(), out.sequences_scores.tolist()


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (2.0, True), (0.5, False)])
def test_length_penalty_and_early_stopping_match_transformers_without_eos(no_eos, length_penalty, early_stopping):
    hf, llm = no_eos
    width, steps = 3, 6
    params = BeamSearchParams(width, steps, length_penalty=length_penalty)
    outs = llm.beam_search([TokensPrompt(prompt_token_ids=p) for p in PROMPTS], params)
    for prompt, out in zip(PROMPTS, outs):
        want, scores = hf_beams(hf, prompt, width, steps, length_penalty, early_stopping)
        assert [s.tokens for s in out.sequences] == want
        np.testing.assert_allclose([s.cum_logprob for s in out.sequences],
                                   [x * steps**length_penalty for x in scores], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_scores_are_raw_logprobs_at_any_temperature(llm, model, temperature):
    """Each step's candidates carry the model's raw logprobs (not temperature-scaled): cum_logprob is their sum
    along the beam, and ``get_beam_search_score`` orders the returned beams."""
    out = llm.beam_search([TokensPrompt(prompt_token_ids=PROMPTS[1])],
                          BeamSearchParams(2, 4, temperature=temperature))[0]
    n = len(PROMPTS[1])
    for s in out.sequences:
        ref = hf_logprobs(model[1], s.tokens).numpy()
        assert s.cum_logprob == pytest.approx(sum(ref[i - 1, s.tokens[i]] for i in range(n, len(s.tokens))),
                                              abs=2e-4)
        for i, step in enumerate(s.logprobs):  # every candidate of the step, with the model's logprob
            np.testing.assert_allclose([lp.logprob for lp in step.values()], ref[n + i - 1, list(step)], atol=2e-4)
    scores = [get_beam_search_score(s.tokens, s.cum_logprob, EOS, 1.0) for s in out.sequences]
    assert scores == sorted(scores, reverse=True)


def test_concurrency_limit_does_not_change_results(llm):
    """vLLM's test_beam_search_with_concurrency_limit: any concurrency_limit gives the same beams."""
    prompts = [TokensPrompt(prompt_token_ids=p) for p in PROMPTS]
    params = BeamSearchParams(2, 5)
    full = llm.beam_search(prompts, params)
    for limit in (1, 2):
        limited = llm.beam_search(prompts, params, concurrency_limit=limit)
        assert [[(s.tokens, s.finish_reason) for s in o.sequences] for o in limited] == \
            [[(s.tokens, s.finish_reason) for s in o.sequences] for o in full]


def test_output_objects_and_text(llm):
    """vLLM's objects: one BeamSearchOutput per prompt whose ``sequences`` are ``beam_width``
    BeamSearchSequences, best first: ``tokens`` with the prompt, one ``{token_id: Logprob}`` per generated
    token holding the chosen token, ``cum_logprob`` their sum, ``text`` the decoded tokens."""
    tok = llm.get_tokenizer()
    text = "hello beams"
    ids = tok(text).input_ids
    outs = llm.beam_search([TextPrompt(prompt=text), TokensPrompt(prompt_token_ids=ids)], BeamSearchParams(3, 5))
    assert [type(o) for o in outs] == [BeamSearchOutput, BeamSearchOutput]
    assert [[s.tokens for s in o.sequences] for o in outs[:1]] == [[s.tokens for s in o.sequences] for o in outs[1:]]
    for s in outs[0].sequences:
        assert isinstance(s, BeamSearchSequence) and s.tokens[: len(ids)] == ids and s.lora_request is None
        generated = s.tokens[len(ids):]
        assert len(s.logprobs) == len(generated) <= 5
        assert all(isinstance(lp, Logprob) for step in s.logprobs for lp in step.values())
        assert s.cum_logprob == pytest.approx(sum(step[t].logprob for t, step in zip(generated, s.logprobs)))
        assert all(step[t].decoded_token == tok.decode([t]) for t, step in zip(generated, s.logprobs))
        stopped = s.finish_reason == "stop"
        assert stopped == (generated[-1] == EOS) and s.stop_reason == (EOS if stopped else None)
        assert s.text == tok.decode(s.tokens[:-1] if stopped else s.tokens, skip_special_tokens=True)
        assert s.text.startswith(text)


def test_finished_beams_are_kept_past_later_steps(llm, model):
    """A beam that ends on EOS at step k is scored against the beams still alive after every later step
    and returned when it stays among the best (vLLM keeps completed beams; it never drops them). With a large
    length_penalty short beams lose, with a negative one they win."""
    prompt = PROMPTS[0]
    by_lp = {}
    for lp in (-3.0, 3.0):
        out = llm.beam_search([TokensPrompt(prompt_token_ids=prompt)], BeamSearchParams(3, 8, length_penalty=lp))[0]
        by_lp[lp] = out.sequences
        assert len(out.sequences) == 3
        scores = [get_beam_search_score(s.tokens, s.cum_logprob, EOS, lp) for s in out.sequences]
        assert scores == sorted(scores, reverse=True)
    short = [s for s in by_lp[-3.0] if s.finish_reason == "stop" and len(s.tokens) < len(prompt) + 8]
    assert short, "the EOS-heavy model should end some beams early"
    assert min(len(s.tokens) for s in by_lp[-3.0]) <= min(len(s.tokens) for s in by_lp[3.0])


def test_ignore_eos_still_discounts_a_trailing_eos(llm, model):
    """vLLM's ``get_beam_search_score`` drops a final EOS from the length whatever ``ignore_eos`` says: on this
    prompt transformers' best beam passes through EOS at its 4th token, a beam that vLLM's length_penalty=1 ranks
    out at that step (its score divides by one token less); with length_penalty=0 the two agree."""
    prompt, eos_path = PROMPTS[1], [398, 237, 158, EOS, 279, 407]
    want, _ = hf_beams(model[1], prompt, 3, 6, 1.0, False)
    assert want[0] == prompt + eos_path
    for lp, kept in ((0.0, True), (1.0, False)):
        out = llm.beam_search([TokensPrompt(prompt_token_ids=prompt)], BeamSearchParams(3, 6, ignore_eos=True,
                                                                                        length_penalty=lp))[0]
        assert (out.sequences[0].tokens == prompt + eos_path) == kept
        assert all(s.finish_reason == "length" and len(s.tokens) == len(prompt) + 6 for s in out.sequences)
