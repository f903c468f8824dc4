"""vLLM conformance of sentence-transformers checkpoints: a Pooling module makes ``runner="auto"`` pool even a
``*ForCausalLM`` checkpoint (Qwen3-Embedding), and Dense modules project the pooled vector before matryoshka
truncation and normalisation (sentence-transformers' module order), on the decoder and encoder paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hf_models import save_tiny_model, save_tokenizer_with_template
from pooling_models import (
    ENGINE,
    VOCAB,
    encoder_hidden,
    hidden_states,
    save_decoder_embedder,
    save_encoder,
    write_sentence_transformers,
)
from safetensors.numpy import save_file

from jaxllm import LLM, PoolingParams

TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog."]


def _add_dense(path, in_features: int, out_features: int, activation: str, seed: int, bias: bool = True):
    """A 2_Dense module (weights, config, modules.json entry before Normalize), as sentence-transformers saves
    it; returns (weight [E, D], bias [E] or None)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_features, in_features)).astype(np.float32) * 0.3
    b = rng.standard_normal(out_features).astype(np.float32) * 0.1 if bias else None
    os.makedirs(path / "2_Dense", exist_ok=True)
    save_file({"linear.weight": weight, **({"linear.bias": b} if bias else {})},
              str(path / "2_Dense" / "model.safetensors"))
    with open(path / "2_Dense" / "config.json", "w") as f:
        json.dump({"in_features": in_features, "out_features": out_features, "bias": bias,
                   "activation_function": activation}, f)
    with open(path / "modules.json") as f:
        modules = json.load(f)
    at = next((i for i, m in enumerate(modules) if m["type"].endswith("Normalize")), len(modules))
    modules.insert(at, {"idx": 9, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    with open(path / "modules.json", "w") as f:
        json.dump(modules, f)
    return weight, b


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_decoder_st_auto_runner_and_dense(tmp_path):
    model = save_decoder_embedder(tmp_path, seed=4)  # Qwen3ForCausalLM + LAST + Normalize
    weight, bias = _add_dense(tmp_path, 64, 24, "torch.nn.modules.activation.Tanh", seed=1)
    llm = LLM(str(tmp_path), **ENGINE)  # runner="auto"
    assert llm.runner_type == "pooling" and llm.pooling_info.projected_size == 24
    tok = llm.get_tokenizer()
    outs = llm.embed(TEXTS, use_tqdm=False)
    for text, out in zip(TEXTS, outs):
        last = hidden_states(model, tok(text).input_ids)[-1].numpy()
        want = _normalize(np.tanh(last @ weight.T + bias))
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4)
    ids = tok(TEXTS[1]).input_ids
    tokens = llm.encode(ids, pooling_task="token_embed", use_tqdm=False)[0].outputs.data
    want = _normalize(np.tanh(hidden_states(model, ids).numpy() @ weight.T + bias))
    np.testing.assert_allclose(tokens, want, atol=1e-4)


def test_encoder_dense_then_matryoshka(tmp_path):
    model = save_encoder(tmp_path, "BertModel", seed=6, is_matryoshka=True)
    write_sentence_transformers(tmp_path, "mean_tokens", normalize=True)
    weight, _ = _add_dense(tmp_path, 64, 32, "torch.nn.modules.linear.Identity", seed=2, bias=False)
    llm = LLM(str(tmp_path), max_model_len=64, max_num_seqs=4, max_num_batched_tokens=64, enforce_eager=True)
    tok = llm.get_tokenizer()
    ids = tok(TEXTS[1]).input_ids
    projected = encoder_hidden(model, ids).numpy().mean(0) @ weight.T
    out = llm.embed(TEXTS[1], pooling_params=PoolingParams(dimensions=8), use_tqdm=False)[0]
    np.testing.assert_allclose(out.outputs.embedding, _normalize(projected[:8]), atol=1e-4)
    full = llm.embed(TEXTS[1], use_tqdm=False)[0]
    assert full.outputs.hidden_size == 32
    with pytest.raises(ValueError, match=r"dimensions must be in \[1, 32\]"):
        llm.embed(TEXTS[1], pooling_params=PoolingParams(dimensions=33), use_tqdm=False)


def test_dense_config_errors(tmp_path):
    save_decoder_embedder(tmp_path, seed=4)
    _add_dense(tmp_path, 48, 24, "torch.nn.modules.activation.Tanh", seed=1)
    with pytest.raises(ValueError, match="in_features=48 does not match the 64"):
        LLM(str(tmp_path), **ENGINE)


def test_convert_keyword(tmp_path, embedder_dir, classifier_dir):
    """vLLM's convert: "embed" is the causal LM's embedder (and leaves a classifier as it is), "classify" needs
    a classifier checkpoint, "reward" makes a per-token reward model (test_decoder_families), "none" refuses to pool a causal LM, any conversion needs runner="pooling"."""
    emb_path, cls_path = str(embedder_dir[0]), str(classifier_dir[0])
    llm = LLM(emb_path, runner="pooling", convert="embed", **ENGINE)
    assert llm.supported_tasks == ("embed", "token_embed")
    cls = LLM(cls_path, runner="pooling", convert="classify", **ENGINE)
    assert "classify" in cls.supported_tasks
    with pytest.raises(ValueError, match="Embedding API is not supported"):
        LLM(cls_path, convert="embed", **ENGINE).embed("hi", use_tqdm=False)
    with pytest.raises(ValueError, match="convert='classify' of a Qwen3Model"):
        LLM(emb_path, runner="pooling", convert="classify", **ENGINE)
    assert LLM(emb_path, runner="pooling", convert="reward", **ENGINE).supported_tasks == ("token_classify",)
    with pytest.raises(ValueError, match="convert"):
        LLM(emb_path, convert="bogus", **ENGINE)
    save_tiny_model(tmp_path, "Qwen3ForCausalLM", vocab_size=VOCAB, head_dim=16)
    save_tokenizer_with_template(tmp_path)
    with pytest.raises(ValueError, match="convert='embed' adapts a model for pooling"):
        LLM(str(tmp_path), convert="embed", **ENGINE)  # runner="auto": a causal LM generates
    with pytest.raises(ValueError, match="does not support `--runner pooling`"):
        LLM(str(tmp_path), runner="pooling", convert="none", **ENGINE)
    assert LLM(str(tmp_path), runner="pooling", convert="embed", **ENGINE).embed("hi", use_tqdm=False)


def test_legacy_task_keyword(embedder_dir):
    """vLLM's deprecated task=: a pooling task selects runner="pooling" (with a DeprecationWarning)."""
    with pytest.warns(DeprecationWarning, match="pass runner='pooling'"):
        llm = LLM(str(embedder_dir[0]), task="embed", **ENGINE)
    assert llm.runner_type == "pooling"
    with pytest.raises(ValueError, match="task='embed' selects runner='pooling'"):
        LLM(str(embedder_dir[0]), task="embed", runner="generate", **ENGINE)
    with pytest.raises(ValueError, match="task='translate'"):
        LLM(str(embedder_dir[0]), task="translate", **ENGINE)


def test_modules_without_pooling_keep_the_defaults(tmp_path):
    """A modules.json without a Pooling module is not read for pooling (vLLM): normalize stays on."""
    from jaxllm.pooling.config import pooling_model_info

    write_sentence_transformers(tmp_path, None, normalize=False)
    info = pooling_model_info(str(tmp_path), {"hidden_size": 64, "architectures": ["BertModel"]})
    assert (info.pooling_type, info.normalize) == ("CLS", True)
