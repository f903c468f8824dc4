"""A cross-encoder (one-label classifier) score and MEAN pooling read from sentence-transformers' config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pooling_models import (
    ENGINE,
    hidden_states,
    save_decoder_embedder,
    save_seq_cls,
    write_sentence_transformers,
)

from jaxllm import LLM, ScoringRequestOutput


def test_cross_encoder_score(tmp_path):
    """LlamaForSequenceClassification with one label: score = sigmoid(logit) of the pair tokenized together;
    1-to-N and N-to-N pairs."""
    model = save_seq_cls(tmp_path, "LlamaForSequenceClassification", num_labels=1)
    llm = LLM(str(tmp_path), runner="pooling", **ENGINE)
    tok = llm.get_tokenizer()
    query, docs = "Hello world", ["The quick brown fox", "STOP here", "Hello"]
    one_to_n = llm.score(query, docs, use_tqdm=False)
    n_to_n = llm.score([query] * 3, docs, use_tqdm=False)
    for doc, a, b in zip(docs, one_to_n, n_to_n):
        ids = tok(text=query, text_pair=doc).input_ids
        with torch.no_grad():
            logit = model(torch.tensor([ids])).logits[0, 0].float()
        assert isinstance(a, ScoringRequestOutput)
        assert a.outputs.score == pytest.approx(float(torch.sigmoid(logit)), abs=1e-5)
        assert b.outputs.score == pytest.approx(a.outputs.score, abs=1e-6)
    probs = llm.classify(query, use_tqdm=False)[0].outputs.probs
    assert len(probs) == 1 and 0 < probs[0] < 1
    with pytest.raises(ValueError, match="only supports"):
        llm.score(query, docs, pooling_params=__import__("jaxllm").PoolingParams(normalize=True), use_tqdm=False)


def test_mean_pooling_from_sentence_transformers(tmp_path):
    """modules.json + 1_Pooling/config.json with mean_tokens and no Normalize module: MEAN pooling over every
    prompt token (also across chunks), not normalised by default."""
    model = save_decoder_embedder(tmp_path, seed=1)
    write_sentence_transformers(tmp_path, "mean_tokens", normalize=False)
    llm = LLM(str(tmp_path), runner="pooling", **ENGINE)
    assert llm.pooling_info.pooling_type == "MEAN" and not llm.pooling_info.normalize
    tok = llm.get_tokenizer()
    texts = ["Hello world", "The quick brown fox jumps over the lazy dog. " * 3]
    for text, out in zip(texts, llm.embed(texts, use_tqdm=False)):
        want = hidden_states(model, tok(text).input_ids).numpy().mean(axis=0)
        np.testing.assert_allclose(out.outputs.embedding, want, atol=1e-4, rtol=1e-4)


def test_prefix_cache_and_tensor_parallel(embedder_dir, embedder_llm):
    """LAST pooling may start from prefix-cache hits (the last token is always computed); token-level tasks
    never do. Under tensor parallelism (2 host devices, synchronous steps) the embeddings are the same."""
    text = "The quick brown fox jumps over the lazy dog. " * 3
    engine = embedder_llm.llm_engine
    first = embedder_llm.embed(text, use_tqdm=False)[0].outputs.embedding
    cached0 = engine.stats.num_cached_tokens
    again = embedder_llm.embed(text, use_tqdm=False)[0].outputs.embedding
    assert engine.stats.num_cached_tokens > cached0
    np.testing.assert_allclose(again, first, atol=1e-5)
    cached1 = engine.stats.num_cached_tokens
    embedder_llm.encode(text, pooling_task="token_embed", use_tqdm=False)
    assert engine.stats.num_cached_tokens == cached1
    assert engine.async_scheduling
    tp = LLM(str(embedder_dir[0]), runner="pooling", tensor_parallel_size=2, async_scheduling=False, **ENGINE)
    assert not tp.llm_engine.async_scheduling
    np.testing.assert_allclose(tp.embed(text, use_tqdm=False)[0].outputs.embedding, first, atol=1e-4)


@pytest.mark.parametrize("preemption_mode", ["recompute", "swap"])
def test_preempted_prompts_pool_once(embedder_dir, preemption_mode):
    """A KV cache too small for every chunked prompt at once: preempted prompts are recomputed from the start,
    or swapped to the host tier and resumed at their next chunk; their token-level outputs still have exactly
    one row per prompt token."""
    model = embedder_dir[1]
    llm = LLM(str(embedder_dir[0]), runner="pooling", num_gpu_blocks_override=9, block_size=16,
              preemption_mode=preemption_mode, swap_space=0.01, **{**ENGINE, "max_num_batched_tokens": 48})
    ids = [[3 + (7 * i + 5 * j) % 400 for j in range(n)] for i, n in enumerate((100, 90, 110, 70))]
    outs = llm.encode([{"prompt_token_ids": x} for x in ids], pooling_task="token_embed", use_tqdm=False)
    stats = llm.llm_engine.stats
    assert stats.num_preemptions > 0
    assert (stats.num_swap_preemptions > 0) == (preemption_mode == "swap")
    for x, out in zip(ids, outs):
        want = hidden_states(model, x).numpy()
        want /= np.linalg.norm(want, axis=-1, keepdims=True)
        np.testing.assert_allclose(out.outputs.data, want, atol=1e-4)


def test_lora_and_data_parallel_are_generate_features(embedder_dir, embedder_llm):
    """LoRA adapters and data-parallel replicas serve generative models: enable_lora or data_parallel_size > 1
    with runner='pooling', and a pooling lora_request, are ValueErrors naming them, before any device work."""
    with pytest.raises(ValueError, match="runner='pooling' with data_parallel_size=2"):
        LLM(str(embedder_dir[0]), runner="pooling", data_parallel_size=2, **ENGINE)
    with pytest.raises(ValueError, match="enable_lora=True is not supported with runner='pooling'"):
        LLM(str(embedder_dir[0]), runner="pooling", enable_lora=True, **ENGINE)
    with pytest.raises(ValueError, match="speculative_config is not supported with runner='pooling'"):
        LLM(str(embedder_dir[0]), runner="pooling", speculative_config={"method": "ngram",
                                                                         "num_speculative_tokens": 2}, **ENGINE)
    with pytest.raises(ValueError, match="lora_request is not supported with runner='pooling'"):
        embedder_llm.embed("hi", lora_request=object(), use_tqdm=False)
