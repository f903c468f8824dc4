"""Pooling LLMs over tiny random checkpoints, session-scoped (building one compiles its programs)."""

from __future__ import annotations

import pytest
from pooling_models import ENGINE, save_decoder_embedder, save_seq_cls


@pytest.fixture(scope="session")
def embedder_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3_embed")
    return path, save_decoder_embedder(path)


@pytest.fixture(scope="session")
def embedder_llm(embedder_dir):
    from jaxllm import LLM

    return LLM(str(embedder_dir[0]), runner="pooling", **ENGINE)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2_cls")
    return path, save_seq_cls(path, "Qwen2ForSequenceClassification", num_labels=3)


@pytest.fixture(scope="session")
def classifier_llm(classifier_dir):
    from jaxllm import LLM

    # runner="auto" picks pooling from the architecture; compiled ahead of time (the others are eager)
    return LLM(str(classifier_dir[0]), **{**ENGINE, "enforce_eager": False})
