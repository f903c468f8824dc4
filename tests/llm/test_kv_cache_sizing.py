"""The KV cache gives memory back when XLA's measured temporaries exceed the reserve it was sized with
(KVCachePlan.shrink_to, ModelRunner._fit_cache_to_temporaries): fewer blocks, programs compiled again against the
new shape, the same greedy tokens."""

from __future__ import annotations

import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.runner import kv_cache_plan


def test_cache_shrinks_and_recompiles_when_temporaries_exceed_the_reserve(llama_dir, monkeypatch):
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, num_gpu_blocks_override=40,
              skip_tokenizer_init=True)
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    prompts = [{"prompt_token_ids": [5, 9, 13, 2]}, {"prompt_token_ids": [7, 7, 1]}]
    before = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    runner, plan = llm.llm_engine.runner, llm.llm_engine.runner.cache_plan
    compiled_before = len(runner.programs)
    monkeypatch.setattr(kv_cache_plan, "GPU_SLACK_BYTES", 0)
    plan.fills_device = True  # as on a GPU, where the blocks fill what the reserve leaves
    plan.activation_reserve_bytes = 7 * plan.bytes_per_block + 1  # 3 blocks short
    runner._fit_cache_to_temporaries(10 * plan.bytes_per_block)
    assert runner.num_blocks == 37
    assert plan.activation_reserve_bytes == 10 * plan.bytes_per_block
    assert len(runner.programs) == compiled_before  # every program compiled again, for the new shape
    assert all(c.shape[1] == 37 for c in runner.kv_caches)
    runner._allocate_cache()
    engine = llm.llm_engine  # as the engine would have been built with the shrunk cache
    engine.block_manager.__init__(37, runner.block_size, engine.block_manager.enable_prefix_caching)
    engine.num_blocks = 37
    after = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert after == before


def test_cache_too_small_for_the_temporaries_is_a_clear_error(llama_dir):
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, num_gpu_blocks_override=8,
              skip_tokenizer_init=True)
    plan = llm.llm_engine.runner.cache_plan
    plan.fills_device = True
    with pytest.raises(ValueError, match="more than the KV cache's 8 blocks"):
        plan.shrink_to(plan.activation_reserve_bytes + 9 * plan.bytes_per_block)


def test_plan_without_a_full_device_only_records_the_temporaries(llama_dir, caplog):
    plan = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=16, num_gpu_blocks_override=8,
               skip_tokenizer_init=True, enforce_eager=True).llm_engine.runner.cache_plan
    with caplog.at_level("WARNING", logger="jaxllm"):
        assert not plan.shrink_to(plan.activation_reserve_bytes + plan.bytes_per_block)
    assert plan.num_blocks == 8 and plan.measured_activation_bytes > plan.activation_reserve_bytes
    assert "were reserved: lower gpu_memory_utilization" in caplog.text
