"""GPU only: the KV host tier through compiled programs on a GPU. The copy programs are compiled at start-up
(none during generate), the slots live in pinned host memory, and preemption by swap and the host prefix cache
give the outputs of swap_space=0."""

from __future__ import annotations

import pytest
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams
from jaxllm.runner.kv_swap import COPY_SIZES

pytestmark = pytest.mark.gpu

DIMS = {"vocab_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "eos_token_id": 0,
        "bos_token_id": None, "hidden_size": 256, "intermediate_size": 512}
# 24 blocks of 16 tokens: 8 sequences of up to 168 tokens cannot all fit -> preemption
ENGINE = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_model_len": 256, "block_size": 16,
          "num_gpu_blocks_override": 24, "skip_tokenizer_init": True}


def _tokens(llm, prompts, params):
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


def _check_start_up(llm):
    runner = llm.llm_engine.runner
    pool = runner.host_kv
    assert pool.num_compilations == 2 * len(COPY_SIZES) and pool.copy_seconds_per_block > 0
    return runner, pool


def test_preemption_by_swap_on_gpu(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM", **DIMS)
    prompts = [[5 + (i * 7 + j) % 400 for j in range(60 + 9 * i)] for i in range(8)]
    params = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
    want = _tokens(LLM(str(tmp_path), swap_space=0, **ENGINE), prompts, params)
    llm = LLM(str(tmp_path), swap_space=0.05, preemption_mode="swap", **ENGINE)
    runner, pool = _check_start_up(llm)
    before = runner.num_compilations
    assert _tokens(llm, prompts, params) == want
    assert llm.llm_engine.stats.num_swap_preemptions > 0
    assert runner.num_compilations == before
    assert all(a.sharding.memory_kind == "pinned_host" for a in pool.slots if a is not None)


def test_host_prefix_cache_on_gpu(tmp_path):
    """Three 192-token prefixes (12 blocks each) over a 24-block cache, asked twice in turn: the second round
    hits every prefix block in the host tier and computes the same tokens."""
    save_tiny_model(tmp_path, "LlamaForCausalLM", **DIMS)
    prefixes = [[3 + (k * 31 + j * 7) % 500 for j in range(192)] for k in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    kw = {**ENGINE, "max_num_seqs": 2}
    plain = LLM(str(tmp_path), swap_space=0, **kw)
    llm = LLM(str(tmp_path), swap_space=0.05, host_prefix_cache=True, **kw)
    runner, _ = _check_start_up(llm)
    before = runner.num_compilations
    for round_ in range(2):
        for k, pre in enumerate(prefixes):
            prompt = pre + [round_ + 1, k + 1]
            out = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0]
            assert out.outputs[0].token_ids == _tokens(plain, [prompt], params)[0]
            assert out.num_cached_tokens == (192 if round_ else 0)
    assert llm.llm_engine.stats.num_host_prefix_cache_hits >= 3 * 12
    assert runner.num_compilations == before
