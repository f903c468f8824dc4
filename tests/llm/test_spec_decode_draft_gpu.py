"""GPU only: draft-model speculative decoding through the GPU attention kernels (compiled buckets, catch-up
chunks and one-token draft steps on the paged caches): greedy outputs identical to plain decoding, and the
target as its own draft accepts (nearly) every draft, greedy or sampled (q = p up to rounding); seeded sampled
outputs are reproducible."""

from __future__ import annotations

import pytest
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams

pytestmark = pytest.mark.gpu

DIMS = {"vocab_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "eos_token_id": 0,
        "bos_token_id": None}
PROMPTS = [[5 + (i * 7 + j) % 400 for j in range(n)] for i, n in enumerate((3, 17, 40, 100, 200))]


def test_draft_model_on_gpu(tmp_path):
    target, draft = tmp_path / "target", tmp_path / "draft"
    save_tiny_model(target, "LlamaForCausalLM", **DIMS, hidden_size=256, intermediate_size=512)
    save_tiny_model(draft, "LlamaForCausalLM", seed=1, **DIMS, hidden_size=128, intermediate_size=256,
                    num_hidden_layers=1)
    # a fixed KV cache: the three engines of this test live in one process, so none may size its cache from
    # the device memory the others left free
    kw = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_model_len": 512, "skip_tokenizer_init": True,
          "kv_cache_memory_bytes": 64 * 2**20}
    params = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    want = [o.outputs[0].token_ids for o in LLM(str(target), **kw).generate(prompts, params, use_tqdm=False)]
    for path, min_rate in ((draft, 0.0), (target, 0.9)):
        # every step speculates (disable_by_batch_size): the automatic rule would not with models this small
        llm = LLM(str(target), **kw, speculative_config={"model": str(path), "num_speculative_tokens": 3,
                                                         "disable_by_batch_size": 8})
        got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
        assert got == want
        assert llm.llm_engine.stats.spec_decode_acceptance_rate >= min_rate
    sampled = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=48, ignore_eos=True, seed=7, logprobs=2)
    stats = llm.llm_engine.stats
    drafted, accepted = stats.spec_decode_num_draft_tokens, stats.spec_decode_num_accepted_tokens
    runs = [[o.outputs[0].token_ids for o in llm.generate(prompts, sampled, use_tqdm=False)] for _ in range(2)]
    assert runs[0] == runs[1]
    rate = (stats.spec_decode_num_accepted_tokens - accepted) / (stats.spec_decode_num_draft_tokens - drafted)
    assert rate >= 0.9, rate
