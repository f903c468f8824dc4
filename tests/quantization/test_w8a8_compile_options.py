"""W8A8 step programs compile with XLA's GEMM autotuning at level 2 (no per-candidate correctness checks: the
default level's checks made the fp8 B2 start-up take minutes on the H200); other models keep XLA's defaults,
and an autotune level in XLA_FLAGS wins. The option only acts on the GPU; here the tests check who gets it and
that it reaches XLA."""

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
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "none")
    bf16, weight_only = jaxllm.load_model(tmp_path), jaxllm.load_model(tmp_path, quantization="fp8")
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "dynamic")
    w8a8, int8 = jaxllm.load_model(tmp_path, quantization="fp8"), jaxllm.load_model(tmp_path, quantization="int8")
    assert [uses_fp8_activations(m) for m in (bf16, weight_only, w8a8, int8)] == [False, False, True, False]
    assert forward_compiler_options(w8a8, xla_flags="") == {"xla_gpu_autotune_level": W8A8_AUTOTUNE_LEVEL}
    for model in (bf16, weight_only, int8):
        assert forward_compiler_options(model, xla_flags="") is None
    assert forward_compiler_options(w8a8, xla_flags="--xla_gpu_autotune_level=4") is None


def test_engine_sets_the_options_for_w8a8_only(monkeypatch, tmp_path):
    """The runner holds the options for a W8A8 model (None for weight-only fp8, or when XLA_FLAGS names a level),
    and a W8A8 engine compiled with them generates. (On the CPU the option changes nothing, so the outputs are
    not compared; the next test shows the options reach XLA.)"""
    save_tiny_model(tmp_path, "LlamaForCausalLM")
    prompts = [{"prompt_token_ids": np.random.RandomState(i).randint(0, 256, 5 + 3 * i).tolist()} for i in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True, detokenize=False)
    cases = [("dynamic", "", {"xla_gpu_autotune_level": W8A8_AUTOTUNE_LEVEL}),
             ("dynamic", "--xla_gpu_autotune_level=4", None), ("none", "", None)]
    for mode, flags, expected in cases:
        monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", mode)
        monkeypatch.setenv("XLA_FLAGS", flags)  # read by the runner when it is built (the backend is up already)
        llm = LLM(str(tmp_path), skip_tokenizer_init=True, quantization="fp8", max_num_seqs=4,
                  max_num_batched_tokens=32, enforce_eager=True)
        assert llm.llm_engine.runner.forward_compile_options == expected
        outs = llm.generate(prompts, params, use_tqdm=False)
        assert [len(o.outputs[0].token_ids) for o in outs] == [4, 4, 4]


def test_runner_hands_the_options_to_xla(monkeypatch, tmp_path):
    """An option XLA does not know fails the compile: proof that the runner's options reach XLA."""

    save_tiny_model(tmp_path, "LlamaForCausalLM")
    monkeypatch.setattr(model_runner, "forward_compiler_options", lambda model: {"no_such_xla_option": 1})
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16,
              enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, detokenize=False)
    with pytest.raises(Exception, match="no_such_xla_option"):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}], params, use_tqdm=False)
