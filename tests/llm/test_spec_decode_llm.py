"""LLM(speculative_config={"method": "ngram", ...}) on a tiny random Llama: greedy outputs token-identical to
no speculation; seeded sampled outputs identical too (each output position draws from the same key and the
same processed distribution with or without drafts), with logprobs, penalties, stops, min_tokens and
logit_bias; drafts get accepted on repeating prompts; no compilation during generate."""

from __future__ import annotations

import pytest

from jaxllm import LLM, SamplingParams

# every step speculates (disable_by_batch_size): the automatic rule would not on a tiny CPU model, where a
# verifying step's host work costs more than its accepted tokens save (tests/llm/test_spec_decode_auto.py)
SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1,
        "disable_by_batch_size": 4}
REPEATING = [[5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7], [11, 12, 13, 14, 15], list(range(20, 40)),
             [9, 9, 9, 9, 9, 9], [30, 31, 32, 33, 34, 35, 30, 31, 32]]


@pytest.fixture(scope="module")
def spec_llm(llama_dir):
    return LLM(str(llama_dir[0]), max_num_seqs=4, max_num_batched_tokens=16, speculative_config=SPEC)


def gen(llm, params, prompts=REPEATING):
    return [o.outputs[0] for o in llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                               use_tqdm=False)]


def test_greedy_identical_and_drafts_accepted(llama_llm, spec_llm):
    stats = spec_llm.llm_engine.stats
    accepted = stats.spec_decode_num_accepted_tokens
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    want, got = gen(llama_llm, params), gen(spec_llm, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert stats.spec_decode_num_accepted_tokens - accepted > 10
    assert 0 < stats.spec_decode_acceptance_rate <= 1
    metrics = {m.name: m for m in spec_llm.get_metrics()}
    assert metrics["vllm:spec_decode_num_accepted_tokens"].value == stats.spec_decode_num_accepted_tokens
    assert metrics["vllm:spec_decode_num_draft_tokens"].value == stats.spec_decode_num_draft_tokens
    assert metrics["vllm:spec_decode_num_drafts"].value == stats.spec_decode_num_drafts
    assert sum(metrics["vllm:spec_decode_num_accepted_tokens_per_pos"].values) == stats.spec_decode_num_accepted_tokens
    assert "vllm:spec_decode_num_drafts" not in {m.name for m in llama_llm.get_metrics()}


@pytest.mark.parametrize("kw", [
    {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "logprobs": 2},
    {"temperature": 0.5, "repetition_penalty": 1.3, "frequency_penalty": 0.2, "presence_penalty": 0.1},
    {"temperature": 0.0, "min_tokens": 6, "stop_token_ids": [7, 8, 9, 12], "logit_bias": {6: 3.0}},
    {"temperature": 0.0, "logprobs": 3, "max_tokens": 7},
], ids=["filters-logprobs", "penalties", "stops-min_tokens-bias", "greedy-logprobs"])
def test_seeded_outputs_identical(llama_llm, spec_llm, kw):
    params = SamplingParams(**{"seed": 3, "max_tokens": 24, **kw})
    assert_same_outputs(gen(llama_llm, params), gen(spec_llm, params), bool(kw.get("logprobs")))


def assert_same_outputs(want, got, with_logprobs: bool) -> None:
    """CompletionOutputs with and without speculation: same tokens, finish and stop reasons (and logprobs)."""
    for w, g in zip(want, got, strict=True):
        assert (g.token_ids, g.finish_reason, g.stop_reason) == (w.token_ids, w.finish_reason, w.stop_reason)
        if with_logprobs:
            assert len(g.logprobs) == len(w.token_ids)
            for lw, lg in zip(w.logprobs, g.logprobs):
                assert lw.keys() == lg.keys()
                assert all(abs(lw[t].logprob - lg[t].logprob) < 1e-4 and lw[t].rank == lg[t].rank for t in lw)
            assert abs(g.cumulative_logprob - w.cumulative_logprob) < 1e-3


def test_no_compilation_during_generate(spec_llm):
    runner = spec_llm.llm_engine.runner
    before = runner.num_compilations
    prompts = [list(range(1, n)) + list(range(1, n)) for n in (3, 12, 7, 9)]
    gen(spec_llm, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True), prompts)
    gen(spec_llm, SamplingParams(temperature=0.8, top_k=20, max_tokens=12, logprobs=2, seed=1), prompts)
    assert runner.num_compilations == before


def test_speculative_config_is_validated_before_loading(llama_dir):
    with pytest.raises(ValueError, match="method='medusa'"):
        LLM(str(llama_dir[0]), speculative_config={"method": "medusa", "num_speculative_tokens": 2})


def test_structured_outputs_alongside_speculation(llama_llm, spec_llm):
    """A constrained request does not speculate and its constraint holds; a plain one beside it speculates."""
    import re

    from jaxllm import StructuredOutputsParams

    so = SamplingParams(temperature=0.9, seed=3, max_tokens=30,
                        structured_outputs=StructuredOutputsParams(regex=r"[a-e]{2,6}-[0-9]{2}"))
    plain = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    stats = spec_llm.llm_engine.stats
    accepted = stats.spec_decode_num_accepted_tokens
    outs = spec_llm.generate([{"prompt_token_ids": REPEATING[0]}, {"prompt_token_ids": REPEATING[1]}],
                             [so, plain], use_tqdm=False)
    assert re.fullmatch(r"[a-e]{2,6}-[0-9]{2}", outs[0].outputs[0].text), outs[0].outputs[0].text
    assert outs[1].outputs[0].token_ids == gen(llama_llm, plain, REPEATING[1:2])[0].token_ids
    assert stats.spec_decode_num_accepted_tokens > accepted
