"""vLLM conformance of the pooling API's surface: method signatures, output classes and their fields, task
errors, ``PoolingParams`` rules and ``score``'s pairing (tiny random checkpoints, the shared session fixtures)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from jaxllm import (
    LLM,
    ClassificationRequestOutput,
    EmbeddingRequestOutput,
    PoolingParams,
    PoolingRequestOutput,
    ScoringRequestOutput,
)
from jaxllm.pooling.outputs import PoolingOutput

# keyword names of vLLM's offline pooling methods (LLM.embed / classify / reward / score / encode)
VLLM_KEYWORDS = {
    "encode": {"pooling_params", "truncate_prompt_tokens", "use_tqdm", "lora_request", "pooling_task",
               "tokenization_kwargs"},
    "embed": {"truncate_prompt_tokens", "use_tqdm", "pooling_params", "lora_request", "tokenization_kwargs"},
    "classify": {"use_tqdm", "pooling_params", "lora_request", "tokenization_kwargs"},
    "reward": {"truncate_prompt_tokens", "use_tqdm", "pooling_params", "lora_request"},
    "score": {"truncate_prompt_tokens", "use_tqdm", "pooling_params", "lora_request", "tokenization_kwargs"},
}


def test_method_keywords_match_vllm():
    for method, names in VLLM_KEYWORDS.items():
        params = inspect.signature(getattr(LLM, method)).parameters
        missing = names - set(params)
        assert not missing, f"LLM.{method} lacks {missing}"
        assert params["use_tqdm"].default is True


def test_request_output_constructor_and_views():
    """vLLM's positional order: (request_id, outputs, prompt_token_ids, num_cached_tokens, finished)."""
    base = PoolingRequestOutput("7", PoolingOutput(np.arange(3, dtype=np.float32)), [1, 2], 1, True)
    assert base.num_cached_tokens == 1 and base.finished is True and "num_cached_tokens=1" in repr(base)
    emb = EmbeddingRequestOutput.from_base(base)
    assert emb.outputs.embedding == [0.0, 1.0, 2.0] and emb.num_cached_tokens == 1 and emb.request_id == "7"
    assert repr(emb.outputs) == "EmbeddingOutput(hidden_size=3)"
    base = PoolingRequestOutput("8", PoolingOutput(np.arange(3, dtype=np.float32)), [1], 0, True)
    assert repr(ClassificationRequestOutput.from_base(base).outputs) == "ClassificationOutput(num_classes=3)"
    score = ScoringRequestOutput.from_base(PoolingRequestOutput("9", PoolingOutput(np.float32(0.5)), [1], 0, True))
    assert score.outputs.score == 0.5 and isinstance(score.outputs.score, float)
    assert repr(score.outputs) == "ScoringOutput(score=0.5)"
    assert PoolingOutput(np.ones(2)) == PoolingOutput(np.ones(2)) and PoolingOutput(np.ones(2)) != PoolingOutput(
        np.zeros(2))
    with pytest.raises(ValueError, match="scalar score"):
        ScoringRequestOutput.from_base(base)


def test_embed_output_fields(embedder_llm):
    outs = embedder_llm.embed(["Hello world", [5, 6, 7], {"prompt": "STOP"}, {"prompt_token_ids": [9, 10]}],
                              use_tqdm=False)
    assert len({o.request_id for o in outs}) == 4
    for out in outs:
        assert isinstance(out, EmbeddingRequestOutput) and out.finished is True
        assert isinstance(out.request_id, str) and isinstance(out.num_cached_tokens, int)
        assert all(type(x) is float for x in out.outputs.embedding) and out.outputs.hidden_size == 64
    assert outs[1].prompt_token_ids == [5, 6, 7] and outs[3].prompt_token_ids == [9, 10]
    again = embedder_llm.embed(prompts="Hello world", use_tqdm=False)  # vLLM's embed takes prompts= too
    np.testing.assert_allclose(again[0].outputs.embedding, outs[0].outputs.embedding, atol=1e-6)


def test_task_errors_name_the_api(embedder_llm, classifier_llm):
    with pytest.raises(ValueError, match="Classification API is not supported"):
        embedder_llm.classify("hi", use_tqdm=False)
    with pytest.raises(ValueError, match="Classification API is not supported"):
        embedder_llm.reward("hi", use_tqdm=False)
    with pytest.raises(ValueError, match="Embedding API is not supported"):
        classifier_llm.embed("hi", use_tqdm=False)
    with pytest.raises(ValueError, match="num_labels == 1"):
        classifier_llm.score("a", "b", use_tqdm=False)
    with pytest.raises(ValueError, match="pooling_task required"):
        embedder_llm.encode("hi", use_tqdm=False)
    with pytest.raises(ValueError, match="only supported for generative models"):
        embedder_llm.generate("hi")


def test_pooling_params_per_task_rules(embedder_llm, classifier_llm):
    with pytest.raises(ValueError, match=r"Task classify only supports \['use_activation'\]"):
        classifier_llm.classify("hi", pooling_params=PoolingParams(normalize=True), use_tqdm=False)
    with pytest.raises(ValueError, match=r"Task embed only supports \['dimensions', 'normalize'\]"):
        embedder_llm.embed("hi", pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
    with pytest.raises(ValueError, match="does not support matryoshka"):
        embedder_llm.embed("hi", pooling_params=PoolingParams(dimensions=8), use_tqdm=False)
    probs = classifier_llm.classify("hello there", use_tqdm=False)[0].outputs.probs
    logits = classifier_llm.classify("hello there", pooling_params=PoolingParams(use_activation=False),
                                     use_tqdm=False)[0].outputs.probs
    legacy = classifier_llm.classify("hello there", pooling_params=PoolingParams(softmax=False),
                                     use_tqdm=False)[0].outputs.probs
    e = np.exp(np.array(logits) - max(logits))
    np.testing.assert_allclose(probs, e / e.sum(), atol=1e-5)
    np.testing.assert_allclose(legacy, logits, atol=1e-6)
    mine = PoolingParams(normalize=False)
    embedder_llm.embed(["a", "b"], pooling_params=mine, use_tqdm=False)
    assert mine.task is None  # the caller's params are copied, never filled in
    with pytest.raises(ValueError, match="lengths of prompts"):
        embedder_llm.embed(["a", "b"], pooling_params=[PoolingParams()], use_tqdm=False)


def test_truncation(embedder_llm):
    tok = embedder_llm.get_tokenizer()
    text = "The quick brown fox jumps over the lazy dog. " * 3
    ids = tok(text).input_ids
    full = embedder_llm.embed(text, truncate_prompt_tokens=-1, use_tqdm=False)[0]
    assert full.prompt_token_ids == ids
    via_params = embedder_llm.embed(text, pooling_params=PoolingParams(truncate_prompt_tokens=4), use_tqdm=False)
    assert via_params[0].prompt_token_ids == ids[-4:]
    assert embedder_llm.embed(ids, truncate_prompt_tokens=4, use_tqdm=False)[0].prompt_token_ids == ids[-4:]
    with pytest.raises(ValueError, match="greater than max_model_len"):
        embedder_llm.embed(text, truncate_prompt_tokens=129, use_tqdm=False)


def test_score_pairing(embedder_llm):
    """Cosine similarity for an embedding model: 1-to-1, 1-to-N, N-to-N; other shapes are errors."""
    docs = ["alpha beta", "gamma", "delta epsilon zeta"]
    embs = [np.array(o.outputs.embedding) for o in embedder_llm.embed(["query"] + docs, use_tqdm=False)]
    one_to_n = embedder_llm.score("query", docs, use_tqdm=False)
    assert [type(o) for o in one_to_n] == [ScoringRequestOutput] * 3
    for out, e in zip(one_to_n, embs[1:]):
        assert out.outputs.score == pytest.approx(float(embs[0] @ e), abs=1e-5)
    pad = embedder_llm.get_tokenizer().pad_token_id
    assert one_to_n[0].prompt_token_ids == embs_ids(embedder_llm, "query") + [pad] + embs_ids(embedder_llm, docs[0])
    assert one_to_n[0].request_id.count("_") == 1 and one_to_n[0].finished
    n_to_n = embedder_llm.score(docs, docs[::-1], use_tqdm=False)
    assert n_to_n[1].outputs.score == pytest.approx(1.0, abs=1e-5)
    one = embedder_llm.score({"prompt": "query"}, "gamma", use_tqdm=False)
    assert len(one) == 1 and one[0].outputs.score == pytest.approx(one_to_n[1].outputs.score, abs=1e-5)
    with pytest.raises(ValueError, match="1:1, 1:N or N:N"):
        embedder_llm.score(docs[:2], docs, use_tqdm=False)
    with pytest.raises(ValueError, match="chat_template is not supported"):
        embedder_llm.score("a", "b", chat_template="{{ x }}", use_tqdm=False)
    with pytest.raises(ValueError, match="At least one"):
        embedder_llm.score([], docs, use_tqdm=False)


def test_pooler_config_logit_bias_and_legacy_names(classifier_dir, classifier_llm):
    """vLLM's PoolerConfig: logit_bias is subtracted from the logits before the activation; softmax=False
    (the older name of use_activation) makes raw logits the default."""
    from pooling_models import ENGINE

    from jaxllm.pooling.config import PoolerConfig

    logits = np.array(classifier_llm.classify("hello there", pooling_params=PoolingParams(use_activation=False),
                                              use_tqdm=False)[0].outputs.probs)
    llm = LLM(str(classifier_dir[0]), pooler_config={"logit_bias": 0.5, "softmax": False}, **ENGINE)
    np.testing.assert_allclose(llm.classify("hello there", use_tqdm=False)[0].outputs.probs, logits - 0.5,
                               atol=1e-5)
    probs = llm.classify("hello there", pooling_params=PoolingParams(use_activation=True),
                         use_tqdm=False)[0].outputs.probs
    e = np.exp(logits - 0.5 - (logits - 0.5).max())
    np.testing.assert_allclose(probs, e / e.sum(), atol=1e-5)
    with pytest.raises(TypeError, match="logit_bias"):
        PoolerConfig.of({"logit_bias": "big"})


def embs_ids(llm, text: str) -> list[int]:
    return llm.get_tokenizer()(text).input_ids
