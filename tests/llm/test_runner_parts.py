"""The model runner's parts: a runner is built without compiling anything (enforce_eager), its programs are keyed by
dataclasses, its kernel policy and KV-cache plan are inspectable, and a step compiles exactly its two programs."""

from __future__ import annotations

import dataclasses

import pytest
from jaxllm.ops.paged_attention import AttentionConfig

from jaxllm import LLM, SamplingParams
from jaxllm.runner.programs import ForwardKey


def test_runner_builds_without_compiling(llama_dir):
    llm = LLM(str(llama_dir[0]), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
              enforce_eager=True, attention_backend="reference", attention_decode_splits=2, num_gpu_blocks_override=12)
    runner = llm.llm_engine.runner
    assert runner.num_compilations == 0 and runner.compile_seconds == 0.0
    assert runner.num_blocks == runner.cache_plan.num_blocks == 12
    assert all(c.shape[1] == 12 for c in runner.kv_caches)
    assert runner.kernels.attention(False) == AttentionConfig("reference", decode_splits=2, fp8_dot="auto")
    keys = runner.startup_keys()
    assert {k.bucket for k in keys if isinstance(k, ForwardKey)} == set(runner.ladder.buckets)
    assert all(dataclasses.is_dataclass(k) for k in keys)
    llm.generate([{"prompt_token_ids": [5, 9, 13]}], SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    # a greedy step takes the forward's argmax: no sampler program
    assert set(runner.programs.compiled) == {ForwardKey(runner.ladder.buckets[0])}


def test_program_keys_are_frozen(llama_dir):
    key = ForwardKey(LLM(str(llama_dir[0]), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
                         enforce_eager=True).llm_engine.runner.ladder.buckets[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        key.long_prefill = True
    assert hash(key) == hash(ForwardKey(key.bucket, False, False))
