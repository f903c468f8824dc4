"""Beam search on the embedded default model, written the way vLLM's documentation writes it (only the import
changed), plus the width-1 search against greedy generate."""

from __future__ import annotations

import pytest

from jaxllm.default_model import DEFAULT_MODEL, INSTALL_HINT, default_model_available

pytestmark = pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")


def test_vllm_style_beam_search_script():
    from jaxllm import LLM, SamplingParams
    from jaxllm.sampling_params import BeamSearchParams

    # enforce_eager: compile only the shapes this search needs (the AOT bucket ladder costs minutes on CPUs)
    llm = LLM(model=DEFAULT_MODEL, dtype="float32", enforce_eager=True, max_model_len=256, max_num_seqs=8,
              max_num_batched_tokens=64)
    prompts = [{"prompt": "The capital of France is"}, {"prompt": "Hello, my name is"}]
    params = BeamSearchParams(beam_width=3, max_tokens=6)
    outputs = llm.beam_search(prompts, params)
    for prompt, output in zip(prompts, outputs):
        for sequence in output.sequences:
            print(f"Prompt: {prompt['prompt']!r}, Generated text: {sequence.text!r} ({sequence.cum_logprob:.3f})")

    eos = llm.get_tokenizer().eos_token_id
    for prompt, output in zip(prompts, outputs):
        seqs = output.sequences
        assert len(seqs) == 3 and len({tuple(s.tokens) for s in seqs}) == 3
        scores = [s.cum_logprob / (len(s.tokens) - (s.tokens[-1] == eos)) for s in seqs]
        assert scores == sorted(scores, reverse=True)  # vLLM's score with length_penalty=1
        assert all(s.text.startswith(prompt["prompt"]) and s.cum_logprob < 0 for s in seqs)
    assert "Paris" in outputs[0].sequences[0].text

    greedy = llm.generate(prompts[0], SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True),
                          use_tqdm=False)[0]
    width_one = llm.beam_search(prompts[:1], BeamSearchParams(1, 6, ignore_eos=True))[0].sequences[0]
    assert width_one.tokens == greedy.prompt_token_ids + greedy.outputs[0].token_ids
