"""The roofline of mixture-of-experts models: FLOPs from the active parameters, decode bytes from the experts a
step's tokens are expected to pick (uniform routing); the MoE bench configs parse to their published sizes."""

from __future__ import annotations

import json
import os

import pytest

from jaxllm.bench.roofline import experts_touched, roofline
from jaxllm.bench.workloads import CONFIG_DIR, WORKLOADS
from jaxllm.config import ModelConfig
from jaxllm.model_size import linear_param_counts

TINY_MOE = {"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "mlp_only_layers": [1]}


def test_one_token_decode_reads_and_computes_the_active_experts():
    cfg = ModelConfig.from_hf(TINY_MOE)
    d, one_expert = 64, 3 * 64 * 32
    linear, experts = linear_param_counts(cfg)
    assert experts == 8 * one_expert and linear == 2 * (64 * 8 * 16 + 4 * 16 * 64) + 3 * d * 96 + experts
    assert experts_touched(cfg, 1) == pytest.approx(2) and experts_touched(cfg, 10_000) == pytest.approx(8)
    r = roofline(cfg, [10], [2], max_num_seqs=4, peak_flops=1e30, bandwidth=1e9)  # bandwidth bound
    kv = 10 * 2 * 2 * 16 * 2 * 2
    assert r["decode_s"] == pytest.approx((r["weight_bytes"] - 6 * one_expert * 2 + kv) / 1e9)
    slow = roofline(cfg, [10], [1], max_num_seqs=4, peak_flops=1e12, bandwidth=1e30)  # prefill only
    active = cfg.num_params(include_embeddings=False, experts_per_layer=2)
    assert slow["prefill_s"] == pytest.approx((2 * active * 10 + 2 * 2 * 4 * 16 * 100) / 1e12)


@pytest.mark.parametrize("name, total, active", [("qwen3-30b-a3b", 30.5e9, 3.35e9), ("mixtral-8x7b", 46.7e9, 12.9e9)])
def test_moe_bench_configs(name, total, active):
    with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
        cfg = ModelConfig.from_hf(json.load(f))
    assert cfg.num_params() == pytest.approx(total, rel=0.01)
    assert cfg.num_params(experts_per_layer=cfg.num_experts_per_tok) == pytest.approx(active, rel=0.01)
    assert WORKLOADS[f"B2-{name}"].num_requests == WORKLOADS["B2"].num_requests


def test_bench_runs_a_moe_model_with_expert_parallelism(tmp_path):
    """Random weights of a tiny MoE config, experts split over 2 devices, through the whole bench."""
    from jaxllm.bench.main import main

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**TINY_MOE, "max_position_embeddings": 512}))
    result = main(["--config", str(cfg), "--num-requests", "3", "--prompt-len", "4", "8", "--output-len", "5", "5",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager",
                   "--tensor-parallel-size", "2", "--enable-expert-parallel"])
    assert result["jaxllm"]["output_tokens"] == 15 and 0 < result["pct_roofline_output"]
