"""vLLM's LLM-as-reranker conversion: a causal LM checkpoint with ``hf_overrides`` naming
``*ForSequenceClassification`` and ``classifier_from_token`` (Qwen3-Reranker's recipe) scores with its LM head's
rows, and pairs are read as one concatenated text (no pad token between them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import save_tiny_model, save_tokenizer_with_template
from pooling_models import ENGINE, VOCAB

from jaxllm import LLM


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3_reranker")
    model = save_tiny_model(path, "Qwen3ForCausalLM", vocab_size=VOCAB, head_dim=16, tie_word_embeddings=False)
    save_tokenizer_with_template(path)
    return path, model


def _last_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float().numpy()


def test_qwen3_reranker_from_2_way_softmax(causal_lm):
    path, model = causal_lm
    llm = LLM(str(path), **ENGINE)  # a causal LM: generates
    tok = llm.get_tokenizer()
    no, yes = tok.convert_ids_to_tokens([40, 41])
    overrides = {"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": [no, yes],
                 "is_original_qwen3_reranker": True}
    ranker = LLM(str(path), hf_overrides=overrides, **ENGINE)
    assert ranker.runner_type == "pooling" and ranker.pooling_info.is_cross_encoder
    query, docs = "Hello world", [" The quick brown fox", " STOP here"]
    for doc, out in zip(docs, ranker.score(query, docs, use_tqdm=False)):
        ids = tok(query + doc).input_ids
        assert out.prompt_token_ids == ids  # one text: no pad token between the pair
        logits = _last_logits(model, ids)
        p_yes = np.exp(logits[41]) / (np.exp(logits[40]) + np.exp(logits[41]))
        assert out.outputs.score == pytest.approx(float(p_yes), abs=1e-5)


def test_no_post_processing_labels(causal_lm):
    path, model = causal_lm
    tok = LLM(str(path), **ENGINE).get_tokenizer()
    tokens = tok.convert_ids_to_tokens([40, 41, 42])
    llm = LLM(str(path), hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                                       "classifier_from_token": tokens, "method": "no_post_processing"}, **ENGINE)
    ids = tok("Hello world").input_ids
    logits = _last_logits(model, ids)[[40, 41, 42]]
    e = np.exp(logits - logits.max())
    np.testing.assert_allclose(llm.classify(ids, use_tqdm=False)[0].outputs.probs, e / e.sum(), atol=1e-5)
    with pytest.raises(ValueError, match="classifier_from_token"):
        LLM(str(path), hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                                     "is_original_qwen3_reranker": True}, **ENGINE)
