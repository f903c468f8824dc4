"""vLLM's EmbedsPrompt (``LLM(enable_prompt_embeds=True)``, ``{"prompt_embeds": [T, hidden_size]}``) on a tiny
Llama: a prompt given as the model's own embedding rows of some ids generates exactly what those ids do (greedy),
under chunked prefill (prompts longer than the 16-token budget), in batches mixing ids and embeddings, and through
preemption (recompute from the embeddings kept on the host); the prefix cache keys embedding blocks by their
values; bad embeddings are refused before any device work, leaving the rest of the call unqueued."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxllm import LLM, BeamSearchParams, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
# 12 blocks of 8 tokens and a 16-token budget: long prompts are chunked, six requests preempt each other
TIGHT = {"max_num_seqs": 4, "max_num_batched_tokens": 16, "block_size": 8, "num_gpu_blocks_override": 12,
         "swap_space": 0, "enforce_eager": True}


@pytest.fixture(scope="module")
def llm(llama_dir):
    return LLM(str(llama_dir[0]), enable_prompt_embeds=True, **TIGHT)


@pytest.fixture(scope="module")
def table(llama_dir):
    """The HF model's embedding rows [V, D] (float32): what the model itself looks ids up in."""
    return llama_dir[1].get_input_embeddings().weight.detach().numpy()


def _ids(n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, 400, n).tolist()


def _tokens(outs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outs]


def test_embeddings_of_ids_generate_what_the_ids_do(llm, table):
    prompts = [_ids(40, 1), _ids(7, 2)]  # 40 tokens: three prefill chunks of the 16-token budget
    by_ids = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
    llm.reset_prefix_cache()
    as_numpy = llm.generate([{"prompt_embeds": table[p]} for p in prompts], GREEDY, use_tqdm=False)
    assert _tokens(as_numpy) == _tokens(by_ids)
    assert [o.prompt_token_ids for o in as_numpy] == [[0] * 40, [0] * 7]  # vLLM's placeholder ids
    assert [o.prompt for o in as_numpy] == [None, None]
    assert as_numpy[0].outputs[0].text == by_ids[0].outputs[0].text
    llm.reset_prefix_cache()
    as_torch = llm.generate({"prompt_embeds": torch.from_numpy(table[prompts[0]])}, GREEDY, use_tqdm=False)
    as_jax = llm.generate({"prompt_embeds": jnp.asarray(table[prompts[1]])[None]}, GREEDY, use_tqdm=False)
    assert _tokens(as_torch) + _tokens(as_jax) == _tokens(by_ids)


def test_a_batch_mixing_ids_and_embeddings(llm, table):
    prompts = [_ids(23, 3), _ids(31, 4), _ids(5, 5), _ids(18, 6)]
    alone = _tokens(llm.generate(prompts, GREEDY, use_tqdm=False))
    llm.reset_prefix_cache()
    mixed = [p if i % 2 else {"prompt_embeds": table[p]} for i, p in enumerate(prompts)]
    assert _tokens(llm.generate(mixed, GREEDY, use_tqdm=False)) == alone


def test_logprobs_of_generated_tokens_match(llm, table):
    params = SamplingParams(temperature=0.0, max_tokens=4, logprobs=3, ignore_eos=True)
    ids = _ids(12, 7)
    want = llm.generate([ids], params, use_tqdm=False)[0].outputs[0]
    got = llm.generate({"prompt_embeds": table[ids]}, params, use_tqdm=False)[0].outputs[0]
    assert list(got.token_ids) == list(want.token_ids)
    for a, b in zip(got.logprobs, want.logprobs, strict=True):
        assert set(a) == set(b)
        assert all(abs(a[t].logprob - b[t].logprob) < 1e-4 for t in a)


def test_preemption_recomputes_from_the_embeddings(llm, table):
    prompts = [_ids(n, 10 + n) for n in (20, 27, 33, 38, 24, 30)]
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    by_ids = _tokens(llm.generate(prompts, params, use_tqdm=False))
    llm.reset_prefix_cache()
    before = llm.llm_engine.stats.num_preemptions
    got = _tokens(llm.generate([{"prompt_embeds": table[p]} for p in prompts], params, use_tqdm=False))
    assert llm.llm_engine.stats.num_preemptions > before
    assert got == by_ids


def test_the_prefix_cache_keys_blocks_by_the_embeddings(llm, table):
    ids = _ids(20, 20)  # two full blocks of 8 can be reused
    params = SamplingParams(temperature=0.0, max_tokens=2)
    embeds = table[ids]
    llm.reset_prefix_cache()
    first = llm.generate({"prompt_embeds": embeds}, params, use_tqdm=False)[0]
    again = llm.generate({"prompt_embeds": embeds}, params, use_tqdm=False)[0]
    assert first.num_cached_tokens == 0 and again.num_cached_tokens == 16
    changed = embeds.copy()
    changed[9] += 0.5  # the second block differs: only the first one hits
    assert llm.generate({"prompt_embeds": changed}, params, use_tqdm=False)[0].num_cached_tokens == 8
    # neither the ids the embeddings came from nor the placeholder ids share the embeddings' blocks
    assert llm.generate([ids, [0] * 20], params, use_tqdm=False)[0].num_cached_tokens == 0
    assert llm.generate([[0] * 20], params, use_tqdm=False)[0].num_cached_tokens == 16  # (its own blocks)
    salted = llm.generate({"prompt_embeds": embeds, "cache_salt": "a"}, params, use_tqdm=False)[0]
    assert salted.num_cached_tokens == 0


@pytest.mark.parametrize("embeds, error, match", [
    (np.zeros((4, 32), np.float32), ValueError, r"prompt 1: prompt_embeds must have shape \[num_tokens, 64\]"),
    (np.zeros((0, 64), np.float32), ValueError, "prompt 1: prompt_embeds is empty"),
    (np.full((3, 64), np.nan, np.float32), ValueError, "prompt 1: prompt_embeds holds NaN"),
    (np.ones((3, 64), np.int32), TypeError, "prompt 1: prompt_embeds must hold floats"),
    ([[0.0] * 64], TypeError, "prompt 1: prompt_embeds must be an array"),
])
def test_bad_embeddings_are_refused_and_the_rest_is_unaffected(llm, table, embeds, error, match):
    with pytest.raises(error, match=match):
        llm.generate([{"prompt_embeds": table[_ids(5, 30)]}, {"prompt_embeds": embeds}], GREEDY, use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()
    ids = _ids(6, 31)
    assert _tokens(llm.generate({"prompt_embeds": table[ids]}, GREEDY, use_tqdm=False)) == \
        _tokens(llm.generate([ids], GREEDY, use_tqdm=False))


def test_options_embeddings_cannot_take(llm, llama_llm, table):
    embeds = {"prompt_embeds": table[_ids(5, 40)]}
    with pytest.raises(ValueError, match=r"prompt 0: prompt_embeds needs LLM\(\.\.\., enable_prompt_embeds=True\)"):
        llama_llm.generate([embeds], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="prompt_logprobs is not supported with prompt_embeds"):
        llm.generate([embeds], SamplingParams(max_tokens=1, prompt_logprobs=1), use_tqdm=False)
    with pytest.raises(ValueError, match=r"unsupported fields \['prompt'\] beside prompt_embeds"):
        llm.generate([{**embeds, "prompt": "hi"}], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="prompt_embeds prompts are supported by LLM.generate only"):
        llm.beam_search([embeds], BeamSearchParams(beam_width=2, max_tokens=1))


def test_n_samples_and_ngram_speculation_stay_exact(llama_dir, llm, table):
    ids = _ids(19, 50) * 2  # repeats: the n-gram proposer drafts from the generated ids
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=10, n=2, ignore_eos=True)
    samples = [list(c.token_ids) for c in llm.generate([ids], params, use_tqdm=False)[0].outputs]
    got = llm.generate({"prompt_embeds": table[ids]}, params, use_tqdm=False)[0]
    assert [list(c.token_ids) for c in got.outputs] == samples and samples[0] != samples[1]
    want = _tokens(llm.generate([ids], GREEDY, use_tqdm=False))[0]
    spec = LLM(str(llama_dir[0]), enable_prompt_embeds=True, max_num_seqs=2, max_num_batched_tokens=64,
               enforce_eager=True, speculative_config={"method": "ngram", "num_speculative_tokens": 2,
                                                       "prompt_lookup_max": 3})
    assert _tokens(spec.generate({"prompt_embeds": table[ids]}, GREEDY, use_tqdm=False))[0] == want


def test_pooling_runners_refuse_the_option(llama_dir):
    with pytest.raises(ValueError, match="enable_prompt_embeds=True is supported with the generate runner only"):
        LLM(str(llama_dir[0]), runner="pooling", enable_prompt_embeds=True, enforce_eager=True)


def test_truncate_prompt_tokens_keeps_the_last_rows(llm, table):
    ids = _ids(30, 60)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, truncate_prompt_tokens=9)
    want = llm.generate([ids], params, use_tqdm=False)[0]
    got = llm.generate({"prompt_embeds": table[ids]}, params, use_tqdm=False)[0]
    assert got.prompt_token_ids == [0] * 9 and _tokens([got]) == _tokens([want])
