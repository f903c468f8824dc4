"""Shared tiny checkpoints (with a tokenizer and chat template) and LLM instances for the engine tests.

LLMs are session-scoped: building one compiles its programs, which dominates these tests' run time."""

from __future__ import annotations

import pytest
from hf_models import save_tiny_model, save_tokenizer_with_template

VOCAB = 448  # >= the tests' BPE tokenizer (421 tokens)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=VOCAB, eos_token_id=0, bos_token_id=None)
    save_tokenizer_with_template(path)
    return path, model


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3")
    model = save_tiny_model(path, "Qwen3ForCausalLM", vocab_size=VOCAB, head_dim=16, eos_token_id=0)
    save_tokenizer_with_template(path)
    return path, model


@pytest.fixture(scope="session")
def llama_llm(llama_dir):
    from jaxllm import LLM

    return LLM(str(llama_dir[0]), max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True)
