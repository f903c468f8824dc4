"""Multi-LoRA under tensor parallelism on 4 fake CPU devices: adapter slot stacks shard like the base
projections, and TP=2 / TP=4 give PEFT's greedy tokens for a batch mixing adapters and the base model."""

from __future__ import annotations

import jax
import pytest
from hf_models import hf_greedy, save_tiny_model
from lora_adapters import save_peft_adapter

from jaxllm import LLM, SamplingParams
from jaxllm.lora import LoRARequest

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_lora_greedy_tokens_under_tp(tmp_path):
    # TP=4 > 2 kv heads: k/v and their adapters replicated
    refs = {None: save_tiny_model(tmp_path / "base", "Qwen3ForCausalLM", num_attention_heads=8,
                                  num_key_value_heads=2, head_dim=16)}
    requests = {None: None}
    for i, targets in enumerate((ALL, ("q_proj", "k_proj", "down_proj"))):
        refs[i] = save_peft_adapter(tmp_path / "base", tmp_path / f"a{i}", r=8, alpha=16, targets=targets,
                                    seed=i + 1)
        requests[i] = LoRARequest(f"a{i}", i + 1, str(tmp_path / f"a{i}"))
    plan, prompts = [0, None, 1], [list(range(5, 5 + n)) for n in (19, 11, 6)]
    expected = [hf_greedy(refs[a], p, 5) for a, p in zip(plan, prompts)]
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    for tp in (2, 4):
        llm = LLM(str(tmp_path / "base"), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=64,
                  enforce_eager=True, tensor_parallel_size=tp, enable_lora=True, max_loras=2, max_lora_rank=8)
        q_b = llm.llm_engine.runner.lora.leaves[1]  # layer 0 q_proj b [S, R, H, Dh]: heads split over devices
        assert q_b.sharding.shard_shape(q_b.shape)[2] == 8 // tp
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                            lora_request=[requests[a] for a in plan], use_tqdm=False)
        assert [list(o.outputs[0].token_ids) for o in outs] == expected, tp
