"""Runner choice, pooling facts from config / sentence-transformers files, PoolingParams checks (no device)."""

from __future__ import annotations

import pytest
from pooling_models import write_sentence_transformers

from jaxllm import PoolingParams
from jaxllm.pooling.config import pooling_model_info, resolve_runner
from jaxllm.pooling.outputs import EmbeddingOutput, PoolingOutput, ScoringOutput

HF = {"hidden_size": 64}


@pytest.mark.parametrize("arch, runner", [
    ("Qwen3ForCausalLM", "generate"), ("LlamaForCausalLM", "generate"), ("BertModel", "pooling"),
    ("XLMRobertaModel", "pooling"), ("Qwen3Model", "pooling"), ("Qwen2ForSequenceClassification", "pooling"),
])
def test_auto_runner(arch, runner):
    assert resolve_runner("auto", {"architectures": [arch]}) == runner


def test_explicit_runner():
    assert resolve_runner("pooling", {"architectures": ["Qwen3ForCausalLM"]}) == "pooling"
    with pytest.raises(ValueError, match="pooling model"):
        resolve_runner("generate", {"architectures": ["LlamaForSequenceClassification"]})
    with pytest.raises(ValueError, match="cannot generate"):
        resolve_runner("generate", {"architectures": ["BertModel"]})


def test_model_info_defaults(tmp_path):
    dec = pooling_model_info(str(tmp_path), {**HF, "architectures": ["Qwen3ForCausalLM"]})
    assert (dec.pooling_type, dec.normalize, dec.tasks) == ("LAST", True, ("embed", "token_embed"))
    enc = pooling_model_info(str(tmp_path), {**HF, "architectures": ["BertModel"]})
    assert enc.encoder and enc.pooling_type == "CLS"
    cls = pooling_model_info(str(tmp_path), {**HF, "architectures": ["Qwen3ForSequenceClassification"],
                                             "id2label": {"0": "a", "1": "b"}})
    assert cls.num_labels == 2 and cls.classify_activation == "softmax" and "score" not in cls.tasks
    one = pooling_model_info(str(tmp_path), {**HF, "architectures": ["LlamaForSequenceClassification"],
                                             "num_labels": 1})
    assert one.is_cross_encoder and one.score_activation == "sigmoid"
    reg = pooling_model_info(str(tmp_path), {**HF, "architectures": ["LlamaForSequenceClassification"],
                                             "num_labels": 1, "problem_type": "regression"})
    assert reg.classify_activation == "identity"
    with pytest.raises(ValueError, match="not supported as a pooling model"):
        pooling_model_info(str(tmp_path), {**HF, "architectures": ["BloomForCausalLM"]})


@pytest.mark.parametrize("mode, normalize, want", [("cls_token", False, "CLS"), ("mean_tokens", True, "MEAN"),
                                                   ("lasttoken", True, "LAST")])
def test_sentence_transformers_pooling(tmp_path, mode, normalize, want):
    write_sentence_transformers(tmp_path, mode, normalize)
    info = pooling_model_info(str(tmp_path), {**HF, "architectures": ["BertModel"]})
    assert (info.pooling_type, info.normalize) == (want, normalize)


def test_sentence_transformers_unsupported_mode(tmp_path):
    write_sentence_transformers(tmp_path, "max_tokens", False)
    with pytest.raises(ValueError, match="pooling_mode_max_tokens"):
        pooling_model_info(str(tmp_path), {**HF, "architectures": ["BertModel"]})


def test_pooling_params_verify(tmp_path):
    info = pooling_model_info(str(tmp_path), {**HF, "architectures": ["Qwen3Model"],
                                              "matryoshka_dimensions": [16, 32]})
    p = PoolingParams(dimensions=16)
    p.verify("embed", info)
    assert (p.task, p.normalize, p.skip_reading_prefix_cache) == ("embed", True, False)
    with pytest.raises(ValueError, match=r"only supports \[16, 32\]"):
        PoolingParams(dimensions=8).verify("embed", info)
    with pytest.raises(ValueError, match="cannot overwrite"):
        PoolingParams(task="classify").verify("embed", info)
    c = PoolingParams(softmax=False)
    c.verify("classify")
    assert c.use_activation is False
    t = PoolingParams()
    t.verify("token_embed", info)
    assert t.skip_reading_prefix_cache
    with pytest.raises(ValueError, match="truncate_prompt_tokens"):
        PoolingParams(truncate_prompt_tokens=0)
    with pytest.raises(ValueError, match="STEP"):
        PoolingParams(step_tag_id=3).verify("embed", info)


def test_output_views():
    import numpy as np

    assert EmbeddingOutput.from_base(PoolingOutput(np.ones(3, np.float32))).embedding == [1.0, 1.0, 1.0]
    assert ScoringOutput.from_base(PoolingOutput(np.float32(0.5))).score == 0.5
    with pytest.raises(ValueError, match="scalar"):
        ScoringOutput.from_base(PoolingOutput(np.ones(2)))


def test_pooler_config_defaults(tmp_path):
    from jaxllm import PoolerConfig

    info = pooling_model_info(str(tmp_path), {**HF, "architectures": ["Qwen3Model"], "is_matryoshka": True},
                              PoolerConfig(pooling_type="mean", dimensions=16))
    assert info.pooling_type == "MEAN"
    p = PoolingParams()
    p.verify("embed", info)
    assert p.dimensions == 16
    cls = pooling_model_info(str(tmp_path), {**HF, "architectures": ["LlamaForSequenceClassification"],
                                             "num_labels": 2}, {"use_activation": False})
    c = PoolingParams()
    c.verify("classify", cls)
    assert c.use_activation is False
