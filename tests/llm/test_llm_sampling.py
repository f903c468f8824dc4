"""Sampling through LLM.generate: seeded requests independent of the batch, n > 1, logprobs and
prompt_logprobs equal to transformers' log_softmax."""

from __future__ import annotations

import numpy as np
from hf_models import hf_logprobs

from jaxllm import SamplingParams


def ids_prompt(ids):
    return {"prompt_token_ids": ids}


def test_seeded_request_is_independent_of_batch(llama_llm):
    target = ids_prompt([5, 17, 99, 23])
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=10, ignore_eos=True)
    alone = llama_llm.generate(target, params, use_tqdm=False)[0].outputs[0].token_ids
    others = [ids_prompt(list(range(3, 3 + k))) for k in (7, 30, 12)]
    mixed = llama_llm.generate(others[:2] + [target] + others[2:],
                               [SamplingParams(temperature=0.7, max_tokens=6)] * 2 + [params]
                               + [SamplingParams(temperature=0.0, max_tokens=9)], use_tqdm=False)
    assert mixed[2].outputs[0].token_ids == alone
    again = llama_llm.generate(target, params, use_tqdm=False)[0].outputs[0].token_ids
    assert again == alone


def test_unseeded_requests_differ_and_n_samples(llama_llm):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=8, ignore_eos=True, seed=7)
    out = llama_llm.generate(ids_prompt([1, 2, 3, 4]), params, use_tqdm=False)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    seqs = [tuple(c.token_ids) for c in out.outputs]
    assert len(set(seqs)) > 1  # 3 samples of 8 tokens from a near-uniform tiny model
    assert all(len(s) == 8 for s in seqs)


def test_logprobs_match_transformers(llama_dir, llama_llm):
    _, hf = llama_dir
    prompt = [11, 12, 13, 14, 15]
    params = SamplingParams(temperature=0.0, max_tokens=5, logprobs=3, prompt_logprobs=2, ignore_eos=True)
    out = llama_llm.generate(ids_prompt(prompt), params, use_tqdm=False)[0]
    comp = out.outputs[0]
    ref = hf_logprobs(hf, prompt + comp.token_ids[:-1]).numpy()
    cumulative = 0.0
    for i, (tok, lp) in enumerate(zip(comp.token_ids, comp.logprobs)):
        row = ref[len(prompt) - 1 + i]
        assert abs(lp[tok].logprob - row[tok]) < 1e-4
        assert lp[tok].rank == 1  # greedy
        top3 = np.argsort(-row)[:3]
        assert set(top3) <= set(lp)
        for t in top3:
            assert abs(lp[int(t)].logprob - row[t]) < 1e-4
        cumulative += row[tok]
    assert abs(comp.cumulative_logprob - cumulative) < 1e-3
    # prompt logprobs: None for the first token, then the logprob of each prompt token given its prefix
    plp = out.prompt_logprobs
    assert plp[0] is None and len(plp) == len(prompt)
    for j in range(1, len(prompt)):
        row = ref[j - 1]
        assert abs(plp[j][prompt[j]].logprob - row[prompt[j]]) < 1e-4
        assert plp[j][prompt[j]].rank == 1 + int((row > row[prompt[j]]).sum())


def test_min_tokens_and_stop_token_ids(llama_llm):
    greedy = llama_llm.generate(ids_prompt([40, 41, 42]), SamplingParams(temperature=0, max_tokens=8,
                                                                         ignore_eos=True), use_tqdm=False)
    toks = greedy[0].outputs[0].token_ids
    stop_id = toks[3]
    out = llama_llm.generate(ids_prompt([40, 41, 42]), SamplingParams(temperature=0, max_tokens=8,
                                                                      stop_token_ids=[stop_id]), use_tqdm=False)
    comp = out[0].outputs[0]
    first = toks.index(stop_id)
    assert comp.token_ids == toks[:first + 1]
    assert comp.finish_reason == "stop" and comp.stop_reason == stop_id
