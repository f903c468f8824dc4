"""``LLM(max_logprobs=...)`` above vLLM's default 20 and -1 (the whole vocabulary), as vLLM: requests up to the
cap work, -1 returns every token, above the cap is vLLM's error."""

from __future__ import annotations

import math

import pytest

from jaxllm import LLM, BeamSearchParams, SamplingParams

VOCAB = 448  # the llama_dir fixture's (tests/llm/conftest.py)

SMALL = {"skip_tokenizer_init": True, "max_num_seqs": 2, "max_num_batched_tokens": 16, "enforce_eager": True}
PROMPT = {"prompt_token_ids": [5, 9, 13, 2, 7]}


def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _check_position(entry, token, top_of):
    """One position's dict: the whole vocabulary, probabilities summing to 1, ranks 1..V, and the same best
    entries as a narrower request's."""
    assert len(entry) == VOCAB and token in entry
    assert _logsumexp([lp.logprob for lp in entry.values()]) == pytest.approx(0.0, abs=1e-4)
    assert sorted(lp.rank for lp in entry.values()) == list(range(1, VOCAB + 1))
    for t, lp in top_of.items():
        assert entry[t].logprob == pytest.approx(lp.logprob, abs=1e-5) and entry[t].rank == lp.rank


def test_minus_one_returns_the_whole_vocabulary(llama_dir):
    llm = LLM(str(llama_dir[0]), max_logprobs=-1, **SMALL)
    greedy = {"temperature": 0.0, "max_tokens": 3}
    narrow, wide, mid = llm.generate(
        [PROMPT] * 3,
        [SamplingParams(logprobs=5, prompt_logprobs=5, **greedy),
         SamplingParams(logprobs=-1, prompt_logprobs=-1, **greedy),
         SamplingParams(logprobs=30, prompt_logprobs=25, **greedy)],
        use_tqdm=False)
    tokens = narrow.outputs[0].token_ids
    assert wide.outputs[0].token_ids == tokens == mid.outputs[0].token_ids
    for step, token in enumerate(tokens):
        _check_position(wide.outputs[0].logprobs[step], token, narrow.outputs[0].logprobs[step])
        assert len(mid.outputs[0].logprobs[step]) in (30, 31)  # the top 30, plus the sampled token if not in it
    assert wide.prompt_logprobs[0] is None and len(wide.prompt_logprobs) == len(PROMPT["prompt_token_ids"])
    for pos in range(1, len(PROMPT["prompt_token_ids"])):
        token = PROMPT["prompt_token_ids"][pos]
        _check_position(wide.prompt_logprobs[pos], token, narrow.prompt_logprobs[pos])
        assert len(mid.prompt_logprobs[pos]) in (25, 26)
    assert wide.outputs[0].cumulative_logprob == pytest.approx(narrow.outputs[0].cumulative_logprob, abs=1e-4)


def test_the_cap_is_vllms_error(llama_dir):
    llm = LLM(str(llama_dir[0]), max_logprobs=30, **SMALL)
    out = llm.generate([PROMPT], SamplingParams(max_tokens=2, logprobs=30), use_tqdm=False)
    assert all(len(d) in (30, 31) for d in out[0].outputs[0].logprobs)
    with pytest.raises(ValueError, match="Requested sample logprobs of 31, which is greater than max allowed: 30"):
        llm.generate([PROMPT], SamplingParams(max_tokens=2, logprobs=31), use_tqdm=False)
    with pytest.raises(ValueError, match=f"Requested prompt logprobs of {VOCAB}, which is greater than max "
                                         "allowed: 30"):
        llm.generate([PROMPT], SamplingParams(max_tokens=2, prompt_logprobs=-1), use_tqdm=False)
    beams = llm.beam_search([PROMPT], BeamSearchParams(beam_width=12, max_tokens=1))  # 24 logprobs a step
    assert len(beams[0].sequences) == 12
    with pytest.raises(ValueError, match="beam_width=16 is not supported"):
        llm.beam_search([PROMPT], BeamSearchParams(beam_width=16, max_tokens=1))
    with pytest.raises(ValueError, match="max_logprobs must be >= -1"):
        LLM(str(llama_dir[0]), max_logprobs=-2, **SMALL)
