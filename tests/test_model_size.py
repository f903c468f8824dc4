"""Weight counts and bytes (jaxllm.model_size): one count serves the speculation rule's step cost and the
benchmark roofline; a 4-bit checkpoint's bytes follow its group size."""

from __future__ import annotations

import dataclasses

import pytest

from jaxllm.bench.roofline import roofline
from jaxllm.config import ModelConfig
from jaxllm.model_size import config_linear_weight_bytes, linear_param_counts, weight_bytes
from jaxllm.spec_decode.cost import platform_peaks, step_cost

TINY = {"architectures": ["LlamaForCausalLM"], "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def test_weight_bytes_counts_linear_weights_at_their_bytes():
    cfg = ModelConfig.from_hf(TINY)
    linear, experts = linear_param_counts(cfg)
    assert experts == 0 and linear == 2 * (64 * (4 + 2 * 2) * 16 + 4 * 16 * 64 + 3 * 64 * 128)
    other = cfg.num_params(include_embeddings=False) - linear + 512 * 64  # norms + lm_head
    assert weight_bytes(cfg, 2, 2) == 2 * (other + linear)
    assert weight_bytes(cfg, 2, 0.5) == 2 * other + 0.5 * linear


def test_step_cost_and_roofline_read_the_same_weights():
    cfg = ModelConfig.from_hf(TINY, dtype="bfloat16")
    cost = step_cost(cfg, platform_peaks("gpu", "NVIDIA H200"), kv_dtype_bytes=2)
    assert cost.weight_bytes == roofline(cfg, [4], [2], max_num_seqs=1)["weight_bytes"] == weight_bytes(cfg, 2, 2)


@pytest.mark.parametrize("group, expected", [(32, 0.5 + 3 / 32), (128, 0.5 + 3 / 128), (-1, 0.5 + 3 / 128)])
def test_int4_bytes_follow_the_group_size(group, expected):
    cfg = dataclasses.replace(ModelConfig.from_hf(TINY), quantization="gptq", quant_group_size=group)
    assert config_linear_weight_bytes(cfg, 2) == pytest.approx(expected)
    assert config_linear_weight_bytes(ModelConfig.from_hf(TINY), 2) == 2


@pytest.mark.parametrize("arch, extra, mlp", [
    ("Starcoder2ForCausalLM", {}, 2 * 64 * 128),  # plain MLP: c_fc, c_proj
    ("Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8,
                             "shared_expert_intermediate_size": 24}, 3 * 64 * 24),  # the shared expert
])
def test_linear_counts_of_plain_mlps_and_shared_experts(arch, extra, mlp):
    cfg = ModelConfig.from_hf({**TINY, "architectures": [arch], **extra})
    linear, experts = linear_param_counts(cfg)
    assert experts == 2 * 4 * 3 * 64 * 8 if cfg.num_experts else experts == 0
    assert linear == 2 * (64 * (4 + 2 * 2) * 16 + 4 * 16 * 64 + mlp) + experts
    assert cfg.num_params(include_embeddings=False) >= linear
