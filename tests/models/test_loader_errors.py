"""Strict loading: missing, unexpected, duplicate keys, wrong shapes and unknown architectures are errors
that name the key and the file."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import save_tiny_model
from safetensors.torch import load_file, save_file

import jaxllm
from jaxllm.weights.loader import WeightLoadError


def _rewrite(path, edit):
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_key(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    _rewrite(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(WeightLoadError, match=r"missing 1 key.*model\.layers\.1\.mlp\.up_proj\.weight"):
        jaxllm.load_model(tmp_path)


def test_unexpected_key(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    _rewrite(tmp_path, lambda t: t.__setitem__("model.layers.0.extra.weight", torch.zeros(3)))
    with pytest.raises(WeightLoadError, match=r"unexpected key 'model\.layers\.0\.extra\.weight' in .*model\.safetensors"):
        jaxllm.load_model(tmp_path)


def test_wrong_shape(tmp_path):
    save_tiny_model(tmp_path, "Qwen2ForCausalLM")
    _rewrite(tmp_path, lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.bias", torch.zeros(5)))
    with pytest.raises(WeightLoadError, match=r"shape mismatch for 'model\.layers\.0\.self_attn\.k_proj\.bias' "
                                              r"in .*model\.safetensors: expected \(32,\), got \(5,\)"):
        jaxllm.load_model(tmp_path)


def test_duplicate_key_across_shards(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM", max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    first = load_file(tmp_path / files[0])
    name = next(iter(first))
    last = load_file(tmp_path / files[-1])
    last[name] = first[name]
    save_file(last, tmp_path / files[-1], metadata={"format": "pt"})
    with pytest.raises(WeightLoadError, match=rf"duplicate key '{name}' in .*{files[-1]}"):
        jaxllm.load_model(tmp_path)


def test_unknown_architecture(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["BloomForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"'BloomForCausalLM' is not supported; supported architectures: "
                                         r"LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        jaxllm.load_model(tmp_path)


def test_unsupported_dtype_and_load_format(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    with pytest.raises(ValueError, match="dtype='int8'"):
        jaxllm.load_model(tmp_path, dtype="int8")
    with pytest.raises(ValueError, match="load_format='pt'"):
        jaxllm.load_model(tmp_path, load_format="pt")


def test_dummy_weights_have_real_shapes(tmp_path):
    save_tiny_model(tmp_path, "Qwen3ForCausalLM")
    model = jaxllm.load_model(tmp_path, load_format="dummy")
    assert model(torch.arange(5).numpy()[None].astype("int32")).shape == (1, 5, 256)
