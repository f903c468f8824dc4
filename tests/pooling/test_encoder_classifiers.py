"""BERT / XLM-R cross-encoders (``*ForSequenceClassification``) against transformers: the CLS row through
BERT's pooler + classifier (with the pair's token types) or RoBERTa's classification head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_models import save_encoder, save_pair_tokenizer

from jaxllm import LLM

ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 64, "max_model_len": 64, "enforce_eager": True}


def test_bert_cross_encoder_score(tmp_path):
    model = save_encoder(tmp_path, "BertForSequenceClassification", num_labels=1)
    save_pair_tokenizer(tmp_path)
    llm = LLM(str(tmp_path), **ENGINE)
    assert llm.pooling_info.is_cross_encoder
    tok = llm.get_tokenizer()
    query, docs = "Hello world", ["The quick brown fox", "STOP here"]
    scores = llm.score(query, docs, use_tqdm=False)
    for doc, out in zip(docs, scores):
        enc = tok(text=query, text_pair=doc, return_tensors="pt")
        assert enc["token_type_ids"].sum() > 0
        with torch.no_grad():
            logit = model(**enc).logits[0, 0]
        assert out.outputs.score == pytest.approx(float(torch.sigmoid(logit)), abs=1e-5)
    with pytest.raises(ValueError, match="Embedding API is not supported"):
        llm.embed("hi")


def test_xlm_roberta_classifier(tmp_path):
    model = save_encoder(tmp_path, "XLMRobertaForSequenceClassification", num_labels=3)
    llm = LLM(str(tmp_path), **ENGINE)
    tok = llm.get_tokenizer()
    texts = ["Hello world", "The quick brown fox jumps over the lazy dog."]
    for text, out in zip(texts, llm.classify(texts, use_tqdm=False)):
        with torch.no_grad():
            logits = model(torch.tensor([tok(text).input_ids])).logits[0]
        np.testing.assert_allclose(out.outputs.probs, torch.softmax(logits, -1).numpy(), atol=1e-5)
    assert llm.reward("hi", use_tqdm=False)[0].outputs.data.shape[1] == 3  # per token (test_pool_audit_encoder)
