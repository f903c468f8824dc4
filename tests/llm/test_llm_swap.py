"""The KV cache's host tier (swap_space) through LLM on a tiny model: preemption by swap and the host prefix
cache give the outputs of swap_space=0 (and transformers' greedy ones), with and without asynchronous
scheduling; host memory stays bounded across calls and is freed with the LLM."""

from __future__ import annotations

import gc
import weakref

import pytest
from test_llm_greedy_parity import check_parity, random_prompts

from jaxllm import LLM, SamplingParams

PARAMS = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
# 12 blocks of 8 tokens: 4 sequences of ~40-60 tokens cannot all fit -> preemption
TIGHT = {"max_num_seqs": 4, "max_num_batched_tokens": 32, "block_size": 8, "num_gpu_blocks_override": 12,
         "enforce_eager": True}


@pytest.mark.parametrize("async_scheduling", [True, False])
def test_preemption_by_swap_keeps_outputs_exact(llama_dir, async_scheduling):
    path, hf = llama_dir
    prompts = random_prompts(6, 448, lo=20, hi=40, seed=3)
    llm = LLM(str(path), swap_space=0.01, preemption_mode="swap", async_scheduling=async_scheduling, **TIGHT)
    outs = check_parity(llm, hf, prompts, PARAMS)
    st = llm.llm_engine.stats
    assert st.num_preemptions > 0 and st.num_swap_preemptions == st.num_preemptions
    assert st.num_swapped_in_blocks == st.num_swapped_out_blocks > 0
    runner = llm.llm_engine.runner  # each step's copies: at most one transfer each way (<= 32 blocks a step)
    assert 0 < runner.host_kv.num_transfers <= 2 * runner.num_steps
    ref = LLM(str(path), swap_space=0, async_scheduling=async_scheduling, **TIGHT)
    ref_outs = ref.generate([{"prompt_token_ids": p} for p in prompts], PARAMS, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in ref_outs]
    assert ref.llm_engine.stats.num_swap_preemptions == 0 and ref.llm_engine.block_manager.host is None


def test_host_memory_is_bounded_and_freed(llama_dir):
    path, _ = llama_dir
    llm = LLM(str(path), swap_space=0.01, preemption_mode="swap", **TIGHT)
    prompts = random_prompts(6, 448, lo=20, hi=40, seed=4)
    sizes = []
    for _ in range(3):
        llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS, use_tqdm=False)
        pool = llm.llm_engine.runner.host_kv
        sizes.append(pool.nbytes)
        host = llm.llm_engine.block_manager.host
        assert host.num_free_slots == host.num_slots
    assert sizes[0] > 0 and sizes == [sizes[0]] * 3
    assert sizes[0] <= pool.num_slots * pool.slot_bytes(llm.llm_engine.runner.kv_caches) <= 0.01 * 2**30
    ref = weakref.ref(next(a for a in pool.slots if a is not None))
    del llm, pool, host
    gc.collect()
    assert ref() is None


def test_host_prefix_cache_hits_prefixes_beyond_the_device_cache(llama_dir):
    """Three 48-token prefixes (6 blocks each) over a 12-block device cache, asked twice in turn: the second
    round finds every prefix in the host tier and computes the same tokens."""
    path, hf = llama_dir
    prefixes = random_prompts(3, 448, lo=48, hi=49, seed=5)
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    kw = {**TIGHT, "max_num_seqs": 2}
    llm = LLM(str(path), swap_space=0.01, host_prefix_cache=True, **kw)
    plain = LLM(str(path), swap_space=0, **kw)
    for round_ in range(2):
        for k, pre in enumerate(prefixes):
            prompt = pre + [round_ + 1, k + 1]
            out = check_parity(llm, hf, [prompt], params)[0]
            ref = plain.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0]
            assert out.outputs[0].token_ids == ref.outputs[0].token_ids
            assert out.num_cached_tokens == (48 if round_ else 0)
            assert ref.num_cached_tokens == 0
    assert llm.llm_engine.stats.num_host_prefix_cache_hits >= 18


def test_preemption_by_swap_under_tensor_parallelism(llama_dir):
    """TP=2: the cache is sharded over KV heads; each device's shard of a swapped block goes to pinned host
    memory from that device and comes back to it."""
    path, hf = llama_dir
    prompts = random_prompts(6, 448, lo=20, hi=40, seed=6)
    llm = LLM(str(path), swap_space=0.01, preemption_mode="swap", tensor_parallel_size=2, **TIGHT)
    check_parity(llm, hf, prompts, PARAMS)
    assert llm.llm_engine.stats.num_swap_preemptions > 0
    pool = llm.llm_engine.runner.host_kv
    slot = next(a for a in pool.slots if a is not None)  # [L, 2, block_size, kv_heads, head_dim]
    assert slot.sharding.memory_kind == "pinned_host" and len(slot.addressable_shards) == 2
    assert slot.addressable_shards[0].data.shape[3] * 2 == slot.shape[3]  # KV heads split over the devices


def test_preemption_by_swap_with_speculative_decoding(llama_dir):
    """n-gram speculation under a tight cache: sequences with drafts are preempted by swap and swapped back in;
    greedy outputs stay transformers' (the drafts' cache slots are rewritten after a swap-in)."""
    path, hf = llama_dir
    prompts = [[(5 + i) % 400 + 3, (9 + 2 * i) % 400 + 3, (13 + 3 * i) % 400 + 3] * (8 + i % 3) for i in range(6)]
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1,
            "disable_by_batch_size": 64}  # every step speculates (the automatic rule would not on a tiny CPU model)
    llm = LLM(str(path), swap_space=0.01, preemption_mode="swap", speculative_config=spec, **TIGHT)
    check_parity(llm, hf, prompts, PARAMS)
    st = llm.llm_engine.stats
    assert st.num_swap_preemptions > 0 and st.spec_decode_num_draft_tokens > 0
