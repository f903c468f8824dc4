"""W8A8 step programs compile with XLA's GEMM autotuning at level 2 (no per-candidate correctness checks: the
default level's checks made the fp8 B2 start-up take minutes on the H200); other models keep XLA's defaults,
and an autotune level in XLA_FLAGS wins."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import save_tiny_model

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.models.quant import W8A8_AUTOTUNE_LEVEL, forward_compiler_options, uses_fp8_activations
from jaxllm.runner import model_runner


def test_options_follow_the_activation_mode(monkeypatch, tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    monkeypatch.delenv("JAXLLM_FP8_ACTIVATIONS", raising=False)
    bf16, weight_only = jaxllm.load_model(tmp_path), jaxllm.load_model(tmp_path, quantization="fp8")
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "dynamic")
    w8a8, int8 = jaxllm.load_model(tmp_path, quantization="fp8"), jaxllm.load_model(tmp_path, quantization="int8")
    assert [uses_fp8_activations(m) for m in (bf16, weight_only, w8a8, int8)] == [False, False, True, False]
    assert forward_compiler_options(w8a8, xla_flags="") == {"xla_gpu_autotune_level": W8A8_AUTOTUNE_LEVEL}
    for model in (bf16, weight_only, int8):
        assert forward_compiler_options(model, xla_flags="") is None
    assert forward_compiler_options(w8a8, xla_flags="--xla_gpu_autotune_level=4") is None


def test_engine_compiles_w8a8_with_the_options(monkeypatch, tmp_path):
    """The runner passes the options to XLA (an unknown option would fail the compile), and greedy decoding
    through those programs matches the same W8A8 model compiled with XLA's defaults."""
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "dynamic")
    prompts = [{"prompt_token_ids": np.random.RandomState(i).randint(0, 256, 5 + 3 * i).tolist()} for i in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, detokenize=False)
    outputs = {}
    for flags in ("", "--xla_gpu_autotune_level=4"):
        monkeypatch.setenv("XLA_FLAGS", flags)
        llm = LLM(str(tmp_path), skip_tokenizer_init=True, quantization="fp8", max_num_seqs=4,
                  max_num_batched_tokens=32, enforce_eager=True)
        expected = None if flags else {"xla_gpu_autotune_level": W8A8_AUTOTUNE_LEVEL}
        assert llm.llm_engine.runner.forward_compiler_options == expected
        outputs[flags] = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert outputs[""] == outputs["--xla_gpu_autotune_level=4"]


def test_runner_hands_the_options_to_xla(monkeypatch, tmp_path):
    """An option XLA does not know fails the compile: proof that the runner's options reach XLA."""

    save_tiny_model(tmp_path, "LlamaForCausalLM")
    monkeypatch.setattr(model_runner, "forward_compiler_options", lambda model: {"no_such_xla_option": 1})
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
              enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, detokenize=False)
    with pytest.raises(Exception, match="no_such_xla_option"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}], params, use_tqdm=False)
