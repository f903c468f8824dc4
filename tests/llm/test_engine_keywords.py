"""vLLM constructor keywords that jaxllm honours: hf_overrides / rope_*, generation_config and
override_generation_config, max_logprobs, disable_log_stats, max_seq_len_to_capture, served_model_name."""

from __future__ import annotations

import json
import logging

import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.engine_args import EngineArgs
from jaxllm.load import locate_model
from jaxllm.runner.programs import ForwardKey

SMALL = {"skip_tokenizer_init": True, "max_num_seqs": 2, "max_num_batched_tokens": 16, "enforce_eager": True}
PROMPT = {"prompt_token_ids": [5, 9, 13, 2]}


def _config(path, **kwargs):
    return locate_model(EngineArgs.from_kwargs({"model": str(path), **kwargs})).config


def test_hf_overrides_dict_callable_and_rope(llama_dir):
    path = llama_dir[0]
    assert _config(path, hf_overrides={"max_position_embeddings": 64}).max_position_embeddings == 64

    def shorter(cfg):
        cfg.max_position_embeddings = 48
        return cfg

    assert _config(path, hf_overrides=shorter).max_position_embeddings == 48
    cfg = _config(path, rope_theta=1234.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert (cfg.rope.theta, cfg.rope.rope_type, cfg.rope.get("factor")) == (1234.0, "linear", 2.0)
    with pytest.raises(TypeError, match="hf_overrides must return"):
        _config(path, hf_overrides=lambda cfg: None)
    llm = LLM(str(path), hf_overrides={"max_position_embeddings": 64}, **SMALL)
    assert llm.engine_args.max_model_len == 64


def test_generation_config_modes(llama_dir, tmp_path):
    path = llama_dir[0]
    (path / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_p": 0.9}))
    try:
        auto = LLM(str(path), **SMALL).get_default_sampling_params()
        assert (auto.temperature, auto.top_p) == (0.6, 0.9)
        plain = LLM(str(path), generation_config="vllm", **SMALL).get_default_sampling_params()
        assert (plain.temperature, plain.top_p) == (SamplingParams().temperature, SamplingParams().top_p)
        (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.2}))
        other = LLM(str(path), generation_config=str(tmp_path), override_generation_config={"top_k": 5},
                    **SMALL).get_default_sampling_params()
        assert (other.temperature, other.top_p, other.top_k) == (0.2, 1.0, 5)
        with pytest.raises(ValueError, match="no generation_config.json"):
            LLM(str(path), generation_config=str(tmp_path / "missing"), **SMALL)
    finally:
        (path / "generation_config.json").unlink()


def test_max_logprobs_and_stat_logging(llama_dir, caplog):
    llm = LLM(str(llama_dir[0]), max_logprobs=2, disable_log_stats=False, **SMALL)
    with pytest.raises(ValueError, match="greater than max allowed: 2"):
        llm.generate([PROMPT], SamplingParams(max_tokens=2, logprobs=3), use_tqdm=False)
    with pytest.raises(ValueError, match="prompt logprobs of 3"):
        llm.generate([PROMPT], SamplingParams(max_tokens=2, prompt_logprobs=3), use_tqdm=False)
    llm.llm_engine._stat_logger.interval = 0.0  # log at every step
    with caplog.at_level(logging.INFO, logger="jaxllm"):
        out = llm.generate([PROMPT], SamplingParams(max_tokens=2, logprobs=2), use_tqdm=False)
    assert len(out[0].outputs[0].logprobs[0]) >= 2
    assert "Avg prompt throughput" in caplog.text and "KV cache usage" in caplog.text
    quiet = LLM(str(llama_dir[0]), **SMALL)  # vLLM's LLM default: disable_log_stats=True
    assert quiet.llm_engine._stat_logger is None


def test_max_seq_len_to_capture_limits_the_startup_compiles(llama_dir):
    llm = LLM(str(llama_dir[0]), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
              max_seq_len_to_capture=8)
    runner = llm.llm_engine.runner
    compiled = {k.bucket.num_tokens for k in runner.programs.compiled if isinstance(k, ForwardKey)}
    assert compiled == {8} and max(b.num_tokens for b in runner.ladder.buckets) == 16
    out = llm.generate([{"prompt_token_ids": list(range(3, 13))}], SamplingParams(max_tokens=2), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 2  # a larger bucket compiled on first use


def test_served_model_name_labels_the_metrics(llama_dir):
    llm = LLM(str(llama_dir[0]), served_model_name=["tiny", "alias"], **SMALL)
    assert {m.labels["model_name"] for m in llm.get_metrics()} == {"tiny"}
    assert {m.labels["model_name"] for m in LLM(str(llama_dir[0]), **SMALL).get_metrics()} == {str(llama_dir[0])}
    with pytest.raises(TypeError, match="served_model_name"):
        LLM(str(llama_dir[0]), served_model_name=3, **SMALL)
