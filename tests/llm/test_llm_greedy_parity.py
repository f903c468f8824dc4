"""Greedy token ids of LLM.generate equal transformers' greedy continuation across batch compositions:
more requests than max_num_seqs, chunked prefill, preemption, prefix caching."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_models import hf_greedy

from jaxllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def random_prompts(n, vocab, lo=3, hi=40, seed=0):
    rng = np.random.RandomState(seed)
    return [[int(t) for t in rng.randint(1, vocab, rng.randint(lo, hi))] for _ in range(n)]


def check_parity(llm, hf, prompts, params=GREEDY):
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for p, out in zip(prompts, outs):
        assert out.prompt_token_ids == p
        assert out.outputs[0].token_ids == hf_greedy(hf, p, params.max_tokens)
        assert out.outputs[0].finish_reason == "length"
    return outs


def test_more_requests_than_max_num_seqs_with_chunked_prefill(llama_dir, llama_llm):
    # max_num_seqs=4, max_num_batched_tokens=32: 9 requests, prompts up to 40 tokens -> chunked prefills
    _, hf = llama_dir
    check_parity(llama_llm, hf, random_prompts(9, 448, seed=1))
    assert llama_llm.llm_engine.stats.num_steps > 12


@pytest.mark.parametrize("arch_dir", ["qwen3_dir"])
def test_other_architecture_tiny_budget(arch_dir, request):
    path, hf = request.getfixturevalue(arch_dir)
    llm = LLM(str(path), max_num_seqs=3, max_num_batched_tokens=8, enforce_eager=True)
    check_parity(llm, hf, random_prompts(5, 448, seed=2))


def test_preemption_keeps_outputs_exact(llama_dir):
    path, hf = llama_dir
    # 12 blocks of 4 tokens: 4 sequences of ~30-50 tokens cannot all fit -> preemption by recompute.
    llm = LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, block_size=8, num_gpu_blocks_override=12,
              enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    check_parity(llm, hf, random_prompts(6, 448, lo=20, hi=40, seed=3), params)
    assert llm.llm_engine.stats.num_preemptions > 0


def test_prefix_caching_reports_cached_tokens(llama_dir, llama_llm):
    _, hf = llama_dir
    shared = random_prompts(1, 448, lo=40, hi=41, seed=4)[0]
    first = check_parity(llama_llm, hf, [shared + [5, 6]])
    assert first[0].num_cached_tokens == 0
    second = check_parity(llama_llm, hf, [shared + [7, 8, 9]])
    # 40 shared tokens = 2 full blocks of 16 are reused
    assert second[0].num_cached_tokens == 32


def test_prefix_caching_disabled(llama_dir):
    path, hf = llama_dir
    llm = LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, enable_prefix_caching=False, enforce_eager=True)
    prompt = random_prompts(1, 448, lo=40, hi=41, seed=5)[0]
    check_parity(llm, hf, [prompt])
    assert check_parity(llm, hf, [prompt])[0].num_cached_tokens == 0


def test_text_prompts_match_token_prompts(llama_llm):
    tok = llama_llm.get_tokenizer()
    text = "The quick brown fox"
    a = llama_llm.generate(text, GREEDY, use_tqdm=False)[0]
    b = llama_llm.generate({"prompt_token_ids": tok(text).input_ids}, GREEDY, use_tqdm=False)[0]
    assert a.prompt == text and a.outputs[0].token_ids == b.outputs[0].token_ids
    full = tok.decode(a.outputs[0].token_ids, skip_special_tokens=True)
    # the incremental detokenizer (like vLLM's) holds back a trailing incomplete UTF-8 sequence
    assert full.startswith(a.outputs[0].text) and full[len(a.outputs[0].text):] in ("", "\ufffd")


def test_step_inputs_pack_round_trip():
    from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
    from jaxllm.runner.buckets import Bucket
    from jaxllm.runner.input_batch import build_step_inputs, pack_step_inputs, unpack_step_inputs

    seqs = [ScheduledSeq(seq_id=0, token_ids=list(range(10, 30)), start=4, num_new_tokens=16, block_table=[3, 7],
                         num_prompt_tokens=20, sampling_params=None, sample=True, output_index=0, rng_seed=1),
            ScheduledSeq(seq_id=1, token_ids=[5, 6, 7], start=2, num_new_tokens=1, block_table=[9],
                         num_prompt_tokens=2, sampling_params=None, sample=True, output_index=1, rng_seed=2)]
    inputs = build_step_inputs(ScheduledBatch(seqs), Bucket(32, 4), block_size=16, max_blocks_per_seq=3)
    assert inputs.input_ids[:17].tolist() == list(range(14, 30)) + [7]
    assert inputs.attention.slot_mapping[:17].tolist() == [3 * 16 + p for p in range(4, 16)] + \
        [7 * 16 + p - 16 for p in range(16, 20)] + [9 * 16 + 2]
    assert inputs.attention.query_start_loc.tolist() == [0, 16, 17, 17, 17]
    assert inputs.logits_indices.tolist() == [15, 16, 16, 16]
    back = unpack_step_inputs(pack_step_inputs(inputs), 32, 4, 3)
    for a, b in zip(jax.tree_util.tree_leaves(inputs), jax.tree_util.tree_leaves(back)):
        assert np.array_equal(a, b)
