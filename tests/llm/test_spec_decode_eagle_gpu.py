"""GPU only: EAGLE-1 speculative decoding through the GPU attention kernels (the target's hidden states recorded
into the feature store, the head's catch-up chunks and one-token draft steps on its paged cache): greedy outputs
identical to plain decoding, seeded sampled outputs reproducible."""

from __future__ import annotations

import pytest
from hf_models import save_tiny_model
from test_spec_decode_eagle import eagle_state, save_eagle

from jaxllm import LLM, SamplingParams

pytestmark = pytest.mark.gpu

DIMS = {"vocab_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "eos_token_id": 0,
        "bos_token_id": None}
PROMPTS = [[5 + (i * 7 + j) % 400 for j in range(n)] for i, n in enumerate((3, 17, 40, 100, 200))]


def test_eagle_on_gpu(tmp_path):
    save_tiny_model(tmp_path / "target", "LlamaForCausalLM", **DIMS, hidden_size=256, intermediate_size=512)
    head, _, tensors = eagle_state(hidden=256, vocab=512)
    head_cfg = {**head.config.to_dict(), **DIMS}
    eagle = save_eagle(tmp_path / "eagle", tensors, head_cfg)
    kw = {"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_model_len": 512, "skip_tokenizer_init": True,
          "kv_cache_memory_bytes": 64 * 2**20}  # a fixed cache: two engines live in this process
    params = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    target = str(tmp_path / "target")
    want = [o.outputs[0].token_ids for o in LLM(target, **kw).generate(prompts, params, use_tqdm=False)]
    llm = LLM(target, **kw, speculative_config={"method": "eagle", "model": eagle, "num_speculative_tokens": 3,
                                                "disable_by_batch_size": 8})
    assert [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)] == want
    assert llm.llm_engine.stats.spec_decode_num_draft_tokens > 100
    sampled = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=48, ignore_eos=True, seed=7, logprobs=2)
    runs = [[o.outputs[0].token_ids for o in llm.generate(prompts, sampled, use_tqdm=False)] for _ in range(2)]
    assert runs[0] == runs[1]
