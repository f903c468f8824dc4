"""ModernBERT (ModernBertModel embedder, ModernBertForSequenceClassification with ``classifier_pooling`` cls and
mean) on the encoder runner against transformers, fp32 within 1e-4: 3 layers alternating global / local attention
(``local_attention=8``: a 20-token prompt reaches past the window), their own rope bases, biases on and off."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from pooling_models import MODERNBERT as TINY
from pooling_models import save_modernbert as _save

from jaxllm import LLM, PoolingParams
from jaxllm.models.modernbert import ModernBertConfig

ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 128, "max_model_len": 64, "enforce_eager": True,
          "skip_tokenizer_init": True}
IDS = [[int(x) for x in np.random.default_rng(s).integers(3, 250, n)] for s, n in ((0, 20), (1, 7))]


@pytest.mark.parametrize("biases", [False, True])
def test_modernbert_embedder(tmp_path, biases):
    """CLS pooling (normalized) and every token's row (token_embed) of ModernBertModel."""
    flags = {"norm_bias": biases, "attention_bias": biases, "mlp_bias": biases}
    model = _save(tmp_path, "ModernBertModel", **flags)
    llm = LLM(str(tmp_path), **ENGINE)
    assert llm.runner_type == "pooling" and "embed" in llm.supported_tasks
    outs = llm.embed([{"prompt_token_ids": ids} for ids in IDS], use_tqdm=False)
    rows = llm.encode({"prompt_token_ids": IDS[0]}, pooling_task="token_embed", use_tqdm=False)[0].outputs.data
    for ids, out in zip(IDS, outs):
        with torch.no_grad():
            hidden = model(torch.tensor([ids])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(out.outputs.embedding, hidden[0] / np.linalg.norm(hidden[0]), atol=1e-4, rtol=0)
        if ids is IDS[0]:
            want = hidden / np.linalg.norm(hidden, axis=-1, keepdims=True)
            np.testing.assert_allclose(rows, want, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="out of vocabulary|vocab"):  # bad input: named, before device work
        llm.embed([{"prompt_token_ids": IDS[1]}, {"prompt_token_ids": [5, 256]}], use_tqdm=False)
    with pytest.raises(ValueError, match="max_model_len|longer"):
        llm.embed({"prompt_token_ids": [5] * 65}, use_tqdm=False)


@pytest.mark.parametrize("overrides", [{"num_labels": 3},
                                       {"num_labels": 1, "classifier_pooling": "mean", "classifier_bias": True,
                                        "norm_bias": True, "classifier_activation": "gelu_new"}])
def test_modernbert_classifier(tmp_path, overrides):
    """The prediction head (dense, activation, LayerNorm) and classifier on the cls / mean pooled row."""
    model = _save(tmp_path, "ModernBertForSequenceClassification", **overrides)
    llm = LLM(str(tmp_path), **ENGINE)
    assert llm.pooling_info.pooling_type == overrides.get("classifier_pooling", "cls").upper()
    outs = llm.classify([{"prompt_token_ids": ids} for ids in IDS], pooling_params=PoolingParams(use_activation=False),
                        use_tqdm=False)
    for ids, out in zip(IDS, outs):
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(out.outputs.probs, want, atol=1e-4, rtol=0)
    if overrides["num_labels"] == 1:  # a cross-encoder: sigmoid of its one logit, "score" among its tasks
        assert "score" in llm.supported_tasks
        prob = llm.classify({"prompt_token_ids": IDS[0]}, use_tqdm=False)[0].outputs.probs
        np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-np.asarray(outs[0].outputs.probs))), atol=1e-6)


def test_modernbert_config_older_names_and_errors():
    """Hub configs of transformers 4 name the rope bases and layer pattern differently; bad values are named."""
    hf = {**TINY, "architectures": ["ModernBertModel"], "global_rope_theta": 1000.0, "local_rope_theta": 50.0,
          "global_attn_every_n_layers": 3}
    cfg = ModernBertConfig.from_hf(hf)
    assert cfg.sliding == (False, True, True) and cfg.rope_theta == (1000.0, 50.0, 50.0) and cfg.window == 4
    with pytest.raises(ValueError, match="rope_type='linear'"):
        ModernBertConfig.from_hf({**hf, "rope_parameters": {"full_attention": {"rope_type": "linear"}}})
    with pytest.raises(ValueError, match="hidden_activation='swish'"):
        ModernBertConfig.from_hf({**hf, "hidden_activation": "swish"})


def test_modernbert_strict_and_pooling_errors(tmp_path):
    from safetensors.torch import load_file, save_file

    from jaxllm.pooling.config import pooling_model_info
    from jaxllm.weights.loader import WeightLoadError

    hf = {**TINY, "architectures": ["ModernBertForSequenceClassification"], "classifier_pooling": "max"}
    with pytest.raises(ValueError, match="classifier_pooling='max'"):
        pooling_model_info(str(tmp_path), hf)
    _save(tmp_path, "ModernBertModel")
    file = os.path.join(tmp_path, "model.safetensors")
    tensors = load_file(file)
    save_file({k: v for k, v in tensors.items() if k != "final_norm.weight"}, file)
    with pytest.raises(WeightLoadError, match="final_norm.weight"):
        LLM(str(tmp_path), **ENGINE)


def test_modernbert_dummy_weights(tmp_path):
    """load_format="dummy": random weights of the real shapes, the classifier head included."""
    import json

    hf = {**TINY, "architectures": ["ModernBertForSequenceClassification"], "num_labels": 2,
          "model_type": "modernbert"}
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        json.dump(hf, f)
    llm = LLM(str(tmp_path), load_format="dummy", **ENGINE)
    probs = llm.classify({"prompt_token_ids": IDS[1]}, use_tqdm=False)[0].outputs.probs
    assert len(probs) == 2 and abs(sum(probs) - 1.0) < 1e-5
