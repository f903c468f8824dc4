"""LLM(speculative_config={"method": "draft_model", "model": PATH, ...}) on tiny random Llamas: greedy outputs
token-identical to no speculation with a different random draft and with the target as its own draft (then
every draft is accepted); seeded sampled outputs identical too (the drafts are greedy, so the verification is
the exact rejection rule and each row keeps its seed stream), with logprobs, stops and max_tokens; sampled
token frequencies match the plain sampler's; a draft of another vocabulary is a ValueError."""

from __future__ import annotations

import collections

import pytest
import torch
from hf_models import hf_greedy, save_tiny_model
from test_spec_decode_llm import assert_same_outputs
from test_spec_decode_llm import gen as spec_gen

from jaxllm import LLM, SamplingParams

VOCAB = 448  # the llama_dir fixture's (tests/llm/conftest.py)

PROMPTS = [[5, 6, 7, 8, 5, 6, 7], [11, 12, 13, 14, 15], list(range(20, 40)), [9, 9, 9], [30, 31, 32, 33]]
KW = {"max_num_seqs": 4, "max_num_batched_tokens": 16}


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("draft")
    model = save_tiny_model(path, "LlamaForCausalLM", seed=1, vocab_size=VOCAB, hidden_size=32,
                            intermediate_size=64, num_hidden_layers=1, eos_token_id=0, bos_token_id=None)
    return path, model


@pytest.fixture(scope="module")
def draft_llm(llama_dir, draft_dir):
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 3}
    return LLM(str(llama_dir[0]), **KW, speculative_config=spec)


@pytest.fixture(scope="module")
def self_draft_llm(llama_dir):
    spec = {"model": str(llama_dir[0]), "num_speculative_tokens": 3}  # method inferred, as vLLM does
    return LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec)


def gen(llm, params, prompts=PROMPTS):
    return spec_gen(llm, params, prompts)


def test_greedy_identical_with_a_different_draft(llama_llm, draft_llm):
    stats = draft_llm.llm_engine.stats
    drafts = stats.spec_decode_num_draft_tokens
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    want, got = gen(llama_llm, params), gen(draft_llm, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert stats.spec_decode_num_draft_tokens - drafts > 50


@pytest.mark.parametrize("preemption", [{"preemption_mode": "recompute"},
                                        {"preemption_mode": "swap", "swap_space": 0.01}], ids=["recompute", "swap"])
def test_drafts_are_the_draft_models_greedy_continuation(llama_dir, draft_dir, preemption):
    """The draft's cache stays right through prefill chunks, rejections, prefix-cache hits and preemption by
    recompute or by swap (12 blocks for 4 sequences of up to 4 blocks): every proposal equals transformers'
    greedy continuation of the draft checkpoint from the full context."""
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 3}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, num_gpu_blocks_override=12, speculative_config=spec,
              **preemption)
    runner, proposals = llm.llm_engine.runner, []
    propose = runner.propose_drafts

    def recording(items):
        out = propose(items)
        proposals.extend((list(seq.token_ids), d) for (seq, _), d in zip(items, out))
        return out

    runner.propose_drafts = llm.llm_engine.scheduler.speculation.drafter = recording
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    gen(llm, params)
    gen(llm, params, [PROMPTS[2] + [1, 2, 3], PROMPTS[2][:17] + [4], PROMPTS[0]])  # prefix-cache hits
    assert llm.llm_engine.scheduler.num_preemptions > 0
    assert (llm.llm_engine.scheduler.num_swap_preemptions > 0) == ("swap_space" in preemption)
    assert llm.llm_engine.scheduler.prefix_cache_hits > 0
    assert len(proposals) > 50
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny forwards: torch's thread pool beside JAX's costs 100x here
    try:
        for context, drafts in proposals:
            assert list(drafts) == hf_greedy(draft_dir[1], context, len(drafts)), context
    finally:
        torch.set_num_threads(threads)


def test_target_as_its_own_draft_accepts_every_draft(llama_llm, self_draft_llm):
    assert self_draft_llm.llm_engine.scheduler.speculation.config.method == "draft_model"
    stats = self_draft_llm.llm_engine.stats
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    want, got = gen(llama_llm, params), gen(self_draft_llm, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert stats.spec_decode_num_draft_tokens > 50
    assert stats.spec_decode_num_accepted_tokens == stats.spec_decode_num_draft_tokens


@pytest.mark.parametrize("kw", [
    {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "logprobs": 2},
    {"temperature": 0.0, "min_tokens": 6, "stop_token_ids": [7, 8, 9, 12], "logprobs": 1},
    {"temperature": 1.0, "max_tokens": 5},
], ids=["filters-logprobs", "stops-min_tokens", "max_tokens"])
def test_seeded_outputs_identical(llama_llm, draft_llm, kw):
    params = SamplingParams(**{"seed": 3, "max_tokens": 24, **kw})
    assert_same_outputs(gen(llama_llm, params), gen(draft_llm, params), bool(kw.get("logprobs")))


def test_sampled_token_frequencies_match_plain_sampling(llama_llm, self_draft_llm):
    """Unseeded draws (n=200 per prompt): the frequencies of the tokens at output positions 1..3 (the first
    verified by a draft) agree with plain sampling's within sampling noise (total variation distance)."""
    params = SamplingParams(temperature=1.5, max_tokens=4, n=200, ignore_eos=True)

    def freqs(llm):
        out = llm.generate({"prompt_token_ids": PROMPTS[3]}, params, use_tqdm=False)[0].outputs
        return [collections.Counter(o.token_ids[j] for o in out) for j in range(1, 4)]

    for want, got in zip(freqs(llama_llm), freqs(self_draft_llm)):
        tv = 0.5 * sum(abs(want[t] - got[t]) for t in set(want) | set(got)) / 200
        assert tv < 0.2, (tv, want.most_common(5), got.most_common(5))


def test_no_compilation_during_generate(draft_llm):
    runner = draft_llm.llm_engine.runner
    before = runner.num_compilations
    gen(draft_llm, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True), [list(range(1, n)) for n in
                                                                                   (3, 12, 7, 9)])
    assert runner.num_compilations == before


def test_a_draft_of_another_vocabulary_is_a_value_error(llama_dir, tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM", vocab_size=VOCAB + 64, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=1)
    with pytest.raises(ValueError, match="vocab_size"):
        LLM(str(llama_dir[0]), **KW, enforce_eager=True,
            speculative_config={"method": "draft_model", "model": str(tmp_path), "num_speculative_tokens": 2})


@pytest.mark.parametrize("spec, match", [
    ({"method": "draft_model", "num_speculative_tokens": 2}, "needs 'model'"),
    ({"method": "draft_model", "model": "x", "num_speculative_tokens": 2, "prompt_lookup_max": 3}, "ngram"),
    ({"method": "ngram", "model": "x", "num_speculative_tokens": 2}, "does not apply"),
])
def test_speculative_config_is_validated(llama_dir, spec, match):
    with pytest.raises(ValueError, match=match):
        LLM(str(llama_dir[0]), speculative_config=spec)


def test_kv_cache_memory_bytes_holds_both_caches(llama_dir, draft_dir):
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 2}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, kv_cache_memory_bytes=2**20, speculative_config=spec)
    runner = llm.llm_engine.runner
    per_block = runner.cache_plan.bytes_per_block + runner.draft.bytes_per_block
    assert runner.num_blocks == (2**20 // runner.cache_plan.bytes_per_block) * runner.cache_plan.bytes_per_block \
        // per_block
    assert runner.draft.cache_plan.num_blocks == runner.num_blocks
