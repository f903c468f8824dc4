"""LLM(speculative_config={"method": "draft_model", "model": PATH, ...}) on tiny random Llamas: greedy outputs
token-identical to no speculation with a different random draft and with the target as its own draft (then
every draft is accepted), with logprobs and stops; random requests verify drafts sampled from the draft's q:
seeded outputs reproducible, logprobs the target's, stops and max_tokens hold, token frequencies match the
plain sampler's; sleep mode frees the draft too; a draft of another vocabulary is a ValueError."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from hf_models import hf_greedy, save_tiny_model
from test_spec_decode_llm import assert_same_outputs
from test_spec_decode_llm import gen as spec_gen

from jaxllm import LLM, SamplingParams

VOCAB = 448  # the llama_dir fixture's (tests/llm/conftest.py)

PROMPTS = [[5, 6, 7, 8, 5, 6, 7], [11, 12, 13, 14, 15], list(range(20, 40)), [9, 9, 9], [30, 31, 32, 33]]
ALWAYS = {"disable_by_batch_size": 64}  # every step speculates (the automatic rule would not on a tiny CPU model)
KW = {"max_num_seqs": 4, "max_num_batched_tokens": 16}


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("draft")
    model = save_tiny_model(path, "LlamaForCausalLM", seed=1, vocab_size=VOCAB, hidden_size=32,
                            intermediate_size=64, num_hidden_layers=1, eos_token_id=0, bos_token_id=None)
    return path, model


@pytest.fixture(scope="module")
def draft_llm(llama_dir, draft_dir):
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 3, **ALWAYS}
    return LLM(str(llama_dir[0]), **KW, speculative_config=spec)


@pytest.fixture(scope="module")
def self_draft_llm(llama_dir):
    spec = {"model": str(llama_dir[0]), "num_speculative_tokens": 3, **ALWAYS}  # method inferred, as vLLM does
    return LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec)


def record_proposals(llm) -> list:
    """The list that every proposal of ``llm`` is appended to, as (context, drafts)."""
    runner, proposals = llm.llm_engine.runner, []
    propose = runner.propose_drafts

    def recording(items):
        out = propose(items)
        proposals.extend((list(seq.token_ids), d) for (seq, _), d in zip(items, out))
        return out

    runner.propose_drafts = llm.llm_engine.scheduler.speculation.drafter = recording
    return proposals


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
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 3, **ALWAYS}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, num_gpu_blocks_override=12, speculative_config=spec,
              **preemption)
    proposals = record_proposals(llm)
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


def test_seeded_greedy_outputs_identical_with_stops_and_logprobs(llama_llm, draft_llm):
    params = SamplingParams(seed=3, max_tokens=24, temperature=0.0, min_tokens=6, stop_token_ids=[7, 8, 9, 12],
                            logprobs=1)
    assert_same_outputs(gen(llama_llm, params), gen(draft_llm, params), True)


@pytest.mark.parametrize("kw", [
    {"temperature": 0.8, "top_p": 0.9, "top_k": 20, "logprobs": 2},
    {"temperature": 1.0, "max_tokens": 5, "stop_token_ids": [7, 8, 9, 12], "logprobs": 0},
    {"temperature": 0.7, "repetition_penalty": 1.3, "presence_penalty": 0.2, "logprobs": 1, "min_tokens": 4},
], ids=["filters-logprobs", "max_tokens-stops", "penalties-min_tokens"])
def test_sampled_drafts_seeded_reproducible_with_target_logprobs(llama_llm, draft_llm, kw):
    """Random requests verify drafts sampled from the draft's q: a seeded request gives the same outputs on
    every run; max_tokens, stops and min_tokens hold; each emitted token's logprob is the target's (its
    prompt logprob when the output is fed back as a prompt)."""
    stats = draft_llm.llm_engine.stats
    drafts = stats.spec_decode_num_draft_tokens
    params = SamplingParams(**{"seed": 3, "max_tokens": 24, **kw})
    first, again = gen(draft_llm, params), gen(draft_llm, params)
    assert_same_outputs(first, again, True)
    assert stats.spec_decode_num_draft_tokens - drafts > 20
    for prompt, out in zip(PROMPTS, first):
        n = len(out.token_ids)
        assert n == params.max_tokens or out.finish_reason == "stop" and n >= params.min_tokens
        stops = {0, *(params.stop_token_ids or ())}  # 0: the checkpoint's eos
        if out.finish_reason == "stop":
            assert out.token_ids[-1] in stops
        assert not set(out.token_ids[:-1]) & stops
        fed = llama_llm.generate({"prompt_token_ids": prompt + out.token_ids},
                                 SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
        for i, (tok, lp) in enumerate(zip(out.token_ids, out.logprobs)):
            assert abs(lp[tok].logprob - fed.prompt_logprobs[len(prompt) + i][tok].logprob) < 1e-4


def assert_same_frequencies(want_llm, got_llm, params, bound: float) -> float:
    """Unseeded draws (``params.n`` of them): the total variation distance between the two LLMs' frequencies
    of the tokens at output positions 1 and 2 (the first ones verified against drafts) stays below ``bound``;
    -> the fraction of ``got_llm``'s drafts accepted meanwhile (its drafts made at least n)."""
    stats, n = got_llm.llm_engine.stats, params.n
    drafted, accepted = stats.spec_decode_num_draft_tokens, stats.spec_decode_num_accepted_tokens

    def freqs(llm):
        out = llm.generate({"prompt_token_ids": PROMPTS[3]}, params, use_tqdm=False)[0].outputs
        return [collections.Counter(o.token_ids[j] for o in out) for j in range(1, 3)]

    for want, got in zip(freqs(want_llm), freqs(got_llm)):
        tv = 0.5 * sum(abs(want[t] - got[t]) for t in set(want) | set(got)) / n
        assert tv < bound, (tv, want.most_common(5), got.most_common(5))
    assert stats.spec_decode_num_draft_tokens - drafted >= n
    return (stats.spec_decode_num_accepted_tokens - accepted) / (stats.spec_decode_num_draft_tokens - drafted)


def test_target_as_its_own_sampled_draft_accepts_and_keeps_the_distribution(llama_llm, self_draft_llm):
    """n=800 at temperature 1.5, top_k=3 (<= 3 then <= 9 tokens at the two positions: the expected total
    variation distance of two such samples is below 0.08): drafts drawn from q = p are all accepted (up to
    rounding) and the frequencies agree with plain sampling's."""
    params = SamplingParams(temperature=1.5, top_k=3, max_tokens=3, n=800, ignore_eos=True)
    assert assert_same_frequencies(llama_llm, self_draft_llm, params, 0.2) > 0.95


@pytest.fixture(scope="module")
def near_draft_llm(llama_dir, tmp_path_factory):
    """The target with its output head scaled by 20 as the draft: the same token ranking with sharper
    distributions, so q is far from p on the same support (partial acceptance; a wrong acceptance rule would
    favour the top token)."""
    import copy

    path = tmp_path_factory.mktemp("near_draft")
    model = copy.deepcopy(llama_dir[1])
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(path, safe_serialization=True)
    spec = {"method": "draft_model", "model": str(path), "num_speculative_tokens": 2, **ALWAYS}
    return LLM(str(llama_dir[0]), **KW, enforce_eager=True, speculative_config=spec)


def test_sampled_drafts_keep_the_target_distribution(llama_llm, near_draft_llm):
    """n=800 at temperature 1.0 with top_p=0.9 (and top_k=2): drafts sampled from a sharper draft (same ranking)
    are partly accepted, partly rejected (then the residual draws). Each draw's token at output positions 1
    and 2 is checked against the target's exact conditional law there, read from its logprobs (the top-2
    raw logprobs: softmax over them, then top-p): the standardized sum of (token == top-1) - P(top-1) over the
    draws stays within 4.5; and the frequencies agree with plain sampling's."""
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=2, max_tokens=3, n=800, ignore_eos=True, logprobs=2)
    rate = assert_same_frequencies(llama_llm, near_draft_llm, params, 0.12)
    assert 0.05 < rate < 0.95, rate
    out = near_draft_llm.generate({"prompt_token_ids": PROMPTS[3]}, params, use_tqdm=False)[0].outputs
    for j in (1, 2):
        hits, expected, var = 0.0, 0.0, 0.0
        for o in out:
            (a, la), (_, lb) = sorted(((t, lp.logprob) for t, lp in o.logprobs[j].items()), key=lambda x: -x[1])[:2]
            p_a = 1.0 / (1.0 + np.exp(lb - la))
            p_a = 1.0 if p_a >= params.top_p else p_a  # top-p on the two: the second kept iff mass above < top_p
            hits, expected, var = hits + (o.token_ids[j] == a), expected + p_a, var + p_a * (1 - p_a)
        assert abs(hits - expected) <= 4.5 * np.sqrt(var) + 1e-9, (j, hits, expected, var)


def test_sleep_frees_and_restores_the_draft(llama_dir, draft_dir):
    """sleep(level=1/2) frees the draft's weights and cache with the target's (the arrays are deleted: the live
    device bytes drop by both models' weights and caches); wake_up brings them back (level 2: from the draft
    checkpoint) and seeded sampled outputs are the same as before."""
    import jax

    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 3, **ALWAYS}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, enable_sleep_mode=True, speculative_config=spec)
    runner, params = llm.llm_engine.runner, SamplingParams(temperature=0.9, seed=5, max_tokens=12)
    ref = [o.token_ids for o in gen(llm, params)]
    live = lambda: sum(a.nbytes for a in jax.live_arrays())
    nbytes = lambda arrays: sum(a.size * a.dtype.itemsize for a in arrays)
    draft_bytes = nbytes(runner.draft.params) + nbytes(runner.draft.kv_caches)
    for level in (1, 2):
        awake = live()
        llm.sleep(level=level)
        assert runner.draft.params is None and not runner.draft.kv_cache_on_device
        assert runner.draft.has_host_weights == (level == 1)
        assert awake - live() >= draft_bytes + nbytes(runner.param_shapes)
        llm.wake_up()
        assert runner.draft.weights_on_device and runner.draft.kv_cache_on_device
        assert [o.token_ids for o in gen(llm, params)] == ref, level


def test_no_compilation_during_generate(draft_llm):
    runner = draft_llm.llm_engine.runner
    before = runner.num_compilations
    prompts = [list(range(1, n)) for n in (3, 12, 7, 9)]
    gen(draft_llm, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True), prompts)
    gen(draft_llm, SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, logprobs=2, seed=1), prompts)
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
    spec = {"method": "draft_model", "model": str(draft_dir[0]), "num_speculative_tokens": 2, **ALWAYS}
    llm = LLM(str(llama_dir[0]), **KW, enforce_eager=True, kv_cache_memory_bytes=2**20, speculative_config=spec)
    runner = llm.llm_engine.runner
    per_block = runner.cache_plan.bytes_per_block + runner.draft.bytes_per_block
    assert runner.num_blocks == (2**20 // runner.cache_plan.bytes_per_block) * runner.cache_plan.bytes_per_block \
        // per_block
    assert runner.draft.cache_plan.num_blocks == runner.num_blocks
