"""vLLM conformance of BERT-family pooling models: truncation keeps the tokenizer's special tokens,
sentence-transformers' tokenizer config (max_seq_length, do_lower_case), and the cross-encoder's activation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pooling_models import encoder_hidden, save_encoder, save_pair_tokenizer, write_sentence_transformers

from jaxllm import LLM, PoolingParams

ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 64, "enforce_eager": True}
TEXT = "The Quick brown fox jumps over the lazy dog"


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory):
    """A BertModel whose tokenizer adds [CLS] ... [SEP] (``<pad>`` ... ``<eos>``), sentence-transformers' CLS
    pooling + Normalize, and a sentence_bert_config.json (max_seq_length 48, lower-casing)."""
    path = tmp_path_factory.mktemp("bert_cls")
    model = save_encoder(path, "BertModel", seed=11)
    save_pair_tokenizer(path)
    write_sentence_transformers(path, "cls_token", normalize=True)
    with open(path / "sentence_bert_config.json", "w") as f:
        json.dump({"max_seq_length": 48, "do_lower_case": True}, f)
    return LLM(str(path), **ENGINE), model


def test_st_tokenizer_config(bert_cls):
    llm, model = bert_cls
    assert llm.engine_args.max_model_len == 48  # max_seq_length, not the 128 positions
    tok = llm.get_tokenizer()
    out = llm.embed(TEXT, use_tqdm=False)[0]
    ids = tok(TEXT.lower()).input_ids
    assert out.prompt_token_ids == ids
    np.testing.assert_allclose(out.outputs.embedding, _normalize(encoder_hidden(model, ids)[0].numpy()), atol=1e-4)
    assert llm.embed({"prompt_token_ids": tok(TEXT).input_ids}, use_tqdm=False)[0].prompt_token_ids == tok(
        TEXT).input_ids  # token ids are taken as given


def test_text_truncation_keeps_special_tokens(bert_cls):
    """vLLM truncates text in the tokenizer from the left: [CLS] + the last tokens + [SEP], k in all."""
    llm, model = bert_cls
    tok = llm.get_tokenizer()
    ids = tok(TEXT.lower()).input_ids
    out = llm.embed(TEXT, truncate_prompt_tokens=5, use_tqdm=False)[0]
    want_ids = ids[:1] + ids[-4:]
    assert out.prompt_token_ids == want_ids and tok.truncation_side == "right"  # the side is restored
    np.testing.assert_allclose(out.outputs.embedding, _normalize(encoder_hidden(model, want_ids)[0].numpy()),
                               atol=1e-4)
    p = llm.embed(TEXT, pooling_params=PoolingParams(truncate_prompt_tokens=5), use_tqdm=False)[0]
    assert p.prompt_token_ids == want_ids
    assert llm.embed(ids, truncate_prompt_tokens=5, use_tqdm=False)[0].prompt_token_ids == ids[-5:]


def test_cross_encoder_activations(tmp_path):
    """problem_type="regression": classify returns the raw logit (transformers' loss convention), score still
    applies the cross-encoder's sigmoid (vLLM's rule); a pair is truncated from the left."""
    model = save_encoder(tmp_path, "BertForSequenceClassification", num_labels=1, problem_type="regression")
    save_pair_tokenizer(tmp_path)
    llm = LLM(str(tmp_path), max_model_len=64, **ENGINE)
    tok = llm.get_tokenizer()
    query, doc = "Hello world", "The quick brown fox jumps over the lazy dog"
    enc = tok(text=query, text_pair=doc, return_tensors="pt")
    with torch.no_grad():
        logit = float(model(**enc).logits[0, 0])
    assert llm.score(query, doc, use_tqdm=False)[0].outputs.score == pytest.approx(
        float(torch.sigmoid(torch.tensor(logit))), abs=1e-5)
    ids = tok(query).input_ids
    with torch.no_grad():
        raw = float(model(torch.tensor([ids])).logits[0, 0])
    assert llm.classify({"prompt_token_ids": ids}, use_tqdm=False)[0].outputs.probs == [pytest.approx(raw, abs=1e-5)]
    cut = llm.score(query, doc, truncate_prompt_tokens=8, use_tqdm=False)[0]
    tok.truncation_side = "left"
    want = tok(text=query, text_pair=doc, truncation=True, max_length=8).input_ids
    tok.truncation_side = "right"
    assert cut.prompt_token_ids == want and len(want) == 8


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "XLMRobertaForSequenceClassification"])
def test_encoder_token_classify(tmp_path, arch):
    """reward / token_classify on an encoder classifier: BERT's classifier (without its pooler) on every token,
    RoBERTa's whole classification head on every token (vLLM's heads); per-token softmax over the labels."""
    model = save_encoder(tmp_path, arch, num_labels=3)
    llm = LLM(str(tmp_path), max_model_len=64, **ENGINE)
    ids = llm.get_tokenizer()(TEXT).input_ids
    backbone = model.bert if arch.startswith("Bert") else model.roberta
    with torch.no_grad():
        hidden = backbone(torch.tensor([ids])).last_hidden_state[0]
        if arch.startswith("Bert"):
            logits = model.classifier(hidden)
        else:
            logits = model.classifier.out_proj(torch.tanh(model.classifier.dense(hidden)))
    out = llm.reward(ids, use_tqdm=False)[0]
    np.testing.assert_allclose(out.outputs.data, torch.softmax(logits, -1).numpy(), atol=1e-5)
    raw = llm.encode(ids, pooling_task="token_classify", use_tqdm=False,
                     pooling_params=PoolingParams(use_activation=False))[0]
    np.testing.assert_allclose(raw.outputs.data, logits.numpy(), atol=1e-4)
