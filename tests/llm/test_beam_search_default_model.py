"""Beam search on the embedded default model, written the way vLLM's documentation writes it (only the import
and the model changed), plus the width-1 search against greedy generate."""

from __future__ import annotations

import pytest

from jaxllm.default_model import INSTALL_HINT, default_model_available

pytestmark = pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")


@pytest.fixture(scope="module")
def llm():
    from jaxllm import LLM

    # enforce_eager and a small batch shape: compile only the shapes these searches need (the AOT bucket ladder
    # of the default model costs minutes on CPUs)
    return LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32", enforce_eager=True, max_num_seqs=8,
               max_num_batched_tokens=64)


def test_vllm_docs_beam_search_snippet(llm, capsys):
    """vLLM's "Generative Models" page, section LLM.beam_search (the docs ask for beam_width=5, max_tokens=50,
    which takes minutes on 2 CPU cores)."""
    from jaxllm.sampling_params import BeamSearchParams

    params = BeamSearchParams(beam_width=4, max_tokens=8)
    outputs = llm.beam_search([{"prompt": "Hello, my name is "}], params)

    for output in outputs:
        generated_text = output.sequences[0].text
        print(f"Generated text: {generated_text!r}")

    assert capsys.readouterr().out.count("Generated text: ") == 1
    seqs = outputs[0].sequences
    eos = llm.get_tokenizer().eos_token_id
    assert len(seqs) == 4 and len({tuple(s.tokens) for s in seqs}) == 4
    scores = [s.cum_logprob / (len(s.tokens) - (s.tokens[-1] == eos)) for s in seqs]
    assert scores == sorted(scores, reverse=True)  # vLLM's score with length_penalty=1
    for s in seqs:
        assert s.text.startswith("Hello, my name is") and s.cum_logprob < 0 and len(s.logprobs) <= 8
        assert (s.finish_reason == "stop") == (s.tokens[-1] == eos) and s.finish_reason in ("stop", "length")


def test_width_one_is_greedy_generate(llm):
    from jaxllm import SamplingParams
    from jaxllm.sampling_params import BeamSearchParams

    prompt = "The capital of France is"
    greedy = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True), use_tqdm=False)[0]
    best = llm.beam_search([prompt], BeamSearchParams(1, 6, ignore_eos=True))[0].sequences[0]
    assert best.tokens == greedy.prompt_token_ids + greedy.outputs[0].token_ids
    assert "Paris" in best.text
