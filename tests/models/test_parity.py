"""Logits of jaxllm.load_model equal transformers' fp32 logits on tiny random checkpoints of every
architecture we claim (relative error max|diff| / max|ref| <= 1e-4)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hf_models import check_logits, hf_logits, relative_error, save_tiny_model

import jaxllm

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}

CASES = {
    "llama-gqa-untied": ("LlamaForCausalLM", {}),
    "llama-tied": ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    "llama-mha": ("LlamaForCausalLM", {"num_key_value_heads": 4}),
    "llama-mqa": ("LlamaForCausalLM", {"num_key_value_heads": 1}),
    "llama3-rope": ("LlamaForCausalLM", {"rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0}),
    "llama-linear-rope": ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
    "llama-dynamic-rope": ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
                                                "max_position_embeddings": 16}),
    "llama-biases": ("LlamaForCausalLM", {"attention_bias": True, "mlp_bias": True}),
    "mistral-window": ("MistralForCausalLM", {"sliding_window": 7}),
    "qwen2-bias-tied": ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen2-sliding-layers": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 6,
                                                  "max_window_layers": 1}),
    "qwen3-qknorm-headdim": ("Qwen3ForCausalLM", {"head_dim": 32}),
    "qwen3-tied": ("Qwen3ForCausalLM", {"tie_word_embeddings": True, "head_dim": 8}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    arch, overrides = CASES[case]
    check_logits(tmp_path, arch, **overrides)


def test_sharded_checkpoint(tmp_path):
    hf = save_tiny_model(tmp_path, "LlamaForCausalLM", max_shard_size="40KB")
    assert os.path.isfile(tmp_path / "model.safetensors.index.json")
    assert len(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    model = jaxllm.load_model(tmp_path)
    ids = np.arange(30, dtype=np.int32).reshape(1, 30) % 256
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


def test_dtype_auto_follows_checkpoint_and_can_be_overridden(tmp_path):
    save_tiny_model(tmp_path, "Qwen2ForCausalLM", dtype=torch.bfloat16)
    auto = jaxllm.load_model(tmp_path)
    assert auto.embed[...].dtype.name == "bfloat16"
    f32 = jaxllm.load_model(tmp_path, dtype="float32")
    assert f32.embed[...].dtype.name == "float32"
    f16 = jaxllm.load_model(tmp_path, dtype="float16")
    assert f16.layers[0].mlp.gate_up[...].dtype.name == "float16"
    ids = np.arange(12, dtype=np.int32)[None]
    a, b = np.asarray(auto(ids)), np.asarray(f32(ids))
    assert relative_error(a, b) < 5e-2  # same weights, bf16 vs fp32 activations


@pytest.mark.parametrize("arch, overrides", [
    ("Qwen3ForCausalLM", {"attention_bias": True}),
    ("Starcoder2ForCausalLM", {}),  # LayerNorm biases, c_fc / c_proj and their biases
    ("CohereForCausalLM", {"use_qk_norm": True}),  # per-head q/k LayerNorm weights
    ("Qwen2MoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
                             "shared_expert_intermediate_size": 32}),  # the shared expert and its gate
])
def test_every_parameter_has_logical_axes(tmp_path, arch, overrides):
    from flax import nnx

    save_tiny_model(tmp_path, arch, **overrides)
    model = jaxllm.load_model(tmp_path)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var[...].ndim, path
