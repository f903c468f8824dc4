"""Decoder pooling models on the paged engine against transformers (fp32, tiny random checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_models import hidden_states

from jaxllm import EmbeddingRequestOutput, PoolingParams, PoolingRequestOutput
from jaxllm.runner.programs import ForwardKey

TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 3, "STOP here"]


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_embed_last_token_normalized(embedder_llm, embedder_dir):
    """Qwen3-Embedding style: last-token pooling, L2-normalised; a prompt longer than the token budget (32)
    runs in chunks."""
    model, tok = embedder_dir[1], embedder_llm.get_tokenizer()
    outs = embedder_llm.embed(TEXTS, use_tqdm=False)
    assert len(TEXTS[1]) > 0 and len(tok(TEXTS[1]).input_ids) > 32
    for text, out in zip(TEXTS, outs):
        assert isinstance(out, EmbeddingRequestOutput)
        ids = tok(text).input_ids
        assert out.prompt_token_ids == ids and out.finished
        want = _normalize(hidden_states(model, ids)[-1].numpy())
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4, rtol=0)
        assert out.outputs.hidden_size == 64


def test_embed_options(embedder_llm, embedder_dir):
    model, tok = embedder_dir[1], embedder_llm.get_tokenizer()
    ids = tok(TEXTS[1]).input_ids
    hidden = hidden_states(model, ids).numpy()
    raw = embedder_llm.embed({"prompt_token_ids": ids}, pooling_params=PoolingParams(normalize=False),
                             use_tqdm=False)[0]
    np.testing.assert_allclose(raw.outputs.embedding, hidden[-1], atol=1e-4, rtol=1e-4)
    cut = embedder_llm.embed(TEXTS[1], truncate_prompt_tokens=5, use_tqdm=False)[0]
    assert cut.prompt_token_ids == ids[-5:]
    np.testing.assert_allclose(cut.outputs.embedding, _normalize(hidden_states(model, ids[-5:])[-1].numpy()),
                               atol=1e-4)
    with pytest.raises(ValueError, match="matryoshka"):
        embedder_llm.embed("hi", pooling_params=PoolingParams(dimensions=8), use_tqdm=False)
    with pytest.raises(ValueError, match="greater than max_model_len"):
        embedder_llm.embed("hi", truncate_prompt_tokens=1000, use_tqdm=False)
    with pytest.raises(ValueError, match=r"does not support \['use_activation'\]"):
        embedder_llm.embed("hi", pooling_params=PoolingParams(use_activation=False), use_tqdm=False)


def test_token_embed(embedder_llm, embedder_dir):
    """encode(pooling_task="token_embed"): one normalised row per prompt token, across chunks."""
    model, tok = embedder_dir[1], embedder_llm.get_tokenizer()
    out = embedder_llm.encode(TEXTS[:2], pooling_task="token_embed", use_tqdm=False)
    for text, o in zip(TEXTS, out):
        assert isinstance(o, PoolingRequestOutput)
        want = _normalize(hidden_states(model, tok(text).input_ids).numpy())
        assert o.outputs.data.shape == want.shape
        np.testing.assert_allclose(o.outputs.data, want, atol=1e-4)
    with pytest.raises(ValueError, match="pooling_task required"):
        embedder_llm.encode("hi")


def test_embedding_score_is_cosine(embedder_llm):
    q, docs = "Hello world", ["Hello world", "The lazy dog", "STOP here"]
    scores = embedder_llm.score(q, docs, use_tqdm=False)
    e = np.array([o.outputs.embedding for o in embedder_llm.embed([q] + docs, use_tqdm=False)])
    want = [float(_normalize(e[0]) @ _normalize(d)) for d in e[1:]]
    np.testing.assert_allclose([s.outputs.score for s in scores], want, atol=1e-5)
    assert scores[0].outputs.score == pytest.approx(1.0, abs=1e-5)
    pairs = embedder_llm.score(docs, docs[::-1], use_tqdm=False)
    assert pairs[1].outputs.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="1:1, 1:N or N:N"):
        embedder_llm.score(docs[:2], docs, use_tqdm=False)


def test_wrong_api_errors(embedder_llm):
    with pytest.raises(ValueError, match="only supported for generative models"):
        embedder_llm.generate("hi")
    with pytest.raises(ValueError, match="Classification API is not supported"):
        embedder_llm.classify("hi")
    with pytest.raises(ValueError, match="Classification API is not supported"):
        embedder_llm.reward("hi")
    with pytest.raises(ValueError, match="Unsupported task: 'score'"):
        embedder_llm.encode("hi", pooling_task="score")
    with pytest.raises(ValueError, match="^prompt 1: Token id 1000000 is out of vocabulary"):
        embedder_llm.embed([{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [10**6]}], use_tqdm=False)
    assert not embedder_llm.llm_engine.has_unfinished_requests()  # the bad batch left nothing behind


def test_classify_and_reward(classifier_llm, classifier_dir):
    """Qwen2ForSequenceClassification: last-token score head, softmax over 3 labels; reward = per token."""
    model, tok = classifier_dir[1], classifier_llm.get_tokenizer()
    outs = classifier_llm.classify(TEXTS, use_tqdm=False)
    for text, out in zip(TEXTS, outs):
        with torch.no_grad():
            logits = model(torch.tensor([tok(text).input_ids])).logits[0].float()
        np.testing.assert_allclose(out.outputs.probs, torch.softmax(logits, -1).numpy(), atol=1e-5)
        assert out.outputs.num_classes == 3
    raw = classifier_llm.classify(TEXTS[0], pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
    with torch.no_grad():
        logits = model(torch.tensor([tok(TEXTS[0]).input_ids])).logits[0].float().numpy()
    np.testing.assert_allclose(raw[0].outputs.probs, logits, atol=1e-4, rtol=1e-4)
    ids = tok(TEXTS[1]).input_ids
    reward = classifier_llm.reward(TEXTS[1], use_tqdm=False)[0]
    token_logits = hidden_states(model, ids) @ model.score.weight.detach().T
    np.testing.assert_allclose(reward.outputs.data, torch.softmax(token_logits, -1).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="Embedding API is not supported"):
        classifier_llm.embed("hi")
    with pytest.raises(ValueError, match="only enabled for num_labels == 1"):
        classifier_llm.score("a", "b")


def test_no_compilation_while_pooling(classifier_llm):
    """Every bucket's pooled forward (and no sampler) is compiled at start-up: classify compiles nothing new;
    a token-level task gets the forwards that also return every token's hidden row."""
    runner = classifier_llm.llm_engine.runner
    startup = runner.startup_keys()
    assert all(isinstance(k, ForwardKey) and not k.return_hidden for k in startup)
    assert {k.bucket for k in startup} == set(runner.ladder.buckets)
    assert set(startup) <= set(runner.programs.compiled)
    assert all(isinstance(k, ForwardKey) for k in runner.programs.compiled)
    before = runner.num_compilations
    classifier_llm.classify(TEXTS * 3, use_tqdm=False)
    assert runner.num_compilations == before
    classifier_llm.reward(TEXTS[0], use_tqdm=False)
    assert any(k.return_hidden for k in runner.programs.compiled)
