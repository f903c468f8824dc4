"""BERT-family encoders on the dense bidirectional path against transformers (fp32, tiny random checkpoints),
with pooling read from sentence-transformers' files."""

from __future__ import annotations

import numpy as np
import pytest
from pooling_models import encoder_hidden, save_encoder, write_sentence_transformers

from jaxllm import LLM, PoolingParams

TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 4, "STOP", "emoji done. The end."]
ENGINE = {"max_num_seqs": 4, "max_num_batched_tokens": 64}


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    model = save_encoder(path, "BertModel")
    write_sentence_transformers(path, "mean_tokens", normalize=True)
    return LLM(str(path), max_model_len=64, **ENGINE), model  # runner="auto": BertModel is a pooling architecture


def test_bert_mean_normalized(bert):
    llm, model = bert
    assert llm.pooling_info.pooling_type == "MEAN" and llm.runner_type == "pooling"
    tok = llm.get_tokenizer()
    outs = llm.embed(TEXTS, use_tqdm=False)
    for text, out in zip(TEXTS, outs):
        want = _normalize(encoder_hidden(model, tok(text).input_ids).numpy().mean(0))
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4)


def test_bert_token_embed_and_options(bert):
    llm, model = bert
    tok = llm.get_tokenizer()
    ids = tok(TEXTS[1]).input_ids
    hidden = encoder_hidden(model, ids).numpy()
    tokens = llm.encode([TEXTS[1], TEXTS[0]], pooling_task="token_embed", use_tqdm=False)[0]
    np.testing.assert_allclose(tokens.outputs.data, _normalize(hidden), atol=1e-4)
    raw = llm.embed({"prompt_token_ids": ids}, pooling_params=PoolingParams(normalize=False), use_tqdm=False)
    np.testing.assert_allclose(raw[0].outputs.embedding, hidden.mean(0), atol=1e-4, rtol=1e-4)
    cut = llm.embed(TEXTS[1], truncate_prompt_tokens=7, use_tqdm=False)[0]
    want = _normalize(encoder_hidden(model, ids[-7:]).numpy().mean(0))
    np.testing.assert_allclose(cut.outputs.embedding, want, atol=1e-4)
    with pytest.raises(ValueError, match="^prompt 1: The decoder prompt .* longer than the maximum model length"):
        llm.embed([{"prompt_token_ids": [3]}, {"prompt_token_ids": [3] * 200}], use_tqdm=False)
    with pytest.raises(ValueError, match="^prompt 0: Token id 1000000 is out of vocabulary"):
        llm.embed({"prompt_token_ids": [3, 10**6]}, use_tqdm=False)
    with pytest.raises(ValueError, match="only supported for generative models"):
        llm.generate("hi")
    with pytest.raises(ValueError, match="kv_cache_dtype='fp8'.*without a KV cache"):
        LLM(llm.model_path, kv_cache_dtype="fp8", **ENGINE)
    with pytest.raises(ValueError, match="preemption_mode='swap'.*without a KV cache"):
        LLM(llm.model_path, preemption_mode="swap", swap_space=0.01, **ENGINE)
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        LLM(llm.model_path, tensor_parallel_size=2, **ENGINE)
    scores = llm.score(TEXTS[0], TEXTS, use_tqdm=False)
    assert scores[0].outputs.score == pytest.approx(1.0, abs=1e-5)


def test_xlm_roberta_cls(tmp_path):
    """XLM-R: positions start at pad_token_id + 1; no sentence-transformers config -> CLS, normalised."""
    model = save_encoder(tmp_path, "XLMRobertaModel", seed=3)
    llm = LLM(str(tmp_path), runner="pooling", enforce_eager=True, **ENGINE)
    assert llm.engine_args.max_model_len == 128  # 130 positions minus the offset of 2
    tok = llm.get_tokenizer()
    for text, out in zip(TEXTS, llm.embed(TEXTS, use_tqdm=False)):
        want = _normalize(encoder_hidden(model, tok(text).input_ids)[0].numpy())
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4)


def test_pooler_config_overrides(tmp_path):
    """LLM(pooler_config=...) replaces the checkpoint's pooling (sentence-transformers' MEAN + Normalize here)."""
    model = save_encoder(tmp_path, "BertModel", seed=5)
    write_sentence_transformers(tmp_path, "mean_tokens", normalize=True)
    llm = LLM(str(tmp_path), pooler_config={"pooling_type": "CLS", "normalize": False}, enforce_eager=True,
              **ENGINE)
    tok = llm.get_tokenizer()
    out = llm.embed(TEXTS[0], use_tqdm=False)[0]
    np.testing.assert_allclose(out.outputs.embedding, encoder_hidden(model, tok(TEXTS[0]).input_ids)[0].numpy(),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="pooler_config.*not supported"):
        LLM(str(tmp_path), pooler_config={"pooling": "CLS"})
    with pytest.raises(ValueError, match="pooling_type='MAX'"):
        LLM(str(tmp_path), pooler_config={"pooling_type": "MAX"})


def test_bert_engine_control_methods_name_themselves(bert):
    """The encoder runs without the paged engine: its control methods are clear errors, not AttributeErrors."""
    llm, _ = bert
    assert llm.get_world_size() == 1
    for call, name in [(llm.reset_prefix_cache, "reset_prefix_cache"), (llm.get_metrics, "get_metrics"),
                       (llm.get_weights, "get_weights"), (lambda: llm.apply_model(len), "apply_model"),
                       (lambda: llm.collective_rpc("warm_up"), "collective_rpc")]:
        with pytest.raises(ValueError, match=rf"LLM\.{name}\(\) is not supported for this encoder"):
            call()
