"""GGUF files of Gemma 1/2/3, Phi-3 (longrope, partial rotary) and OLMo 2, written as llama.cpp's converter does
(tests/gguf_files.py: the ``gguf`` package's own name map, Gemma norms + 1, Phi-3's longrope factors as tensors):
jaxllm.load_model on the file gives transformers' fp32 logits within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from gguf_files import write_hf_as_gguf
from hf_models import hf_logits, relative_error, save_tiny_model

import jaxllm
from jaxllm.weights.gguf import GGUFCheckpoint

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
LONGROPE = {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(6)],
            "long_factor": [2.0 + 0.5 * i for i in range(6)], "original_max_position_embeddings": 8}

CASES = {
    "gemma": ("gemma", "GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": ("gemma2", "Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 6, "query_pre_attn_scalar": 16,
                                               "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    "gemma3": ("gemma3", "Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 16,
                                               "num_hidden_layers": 3, "sliding_window_pattern": 3,
                                               "rope_theta": 50000.0,
                                               "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "phi4-mini-longrope": ("phi3", "Phi3ForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.75,
                                                       "rope_scaling": LONGROPE, "max_position_embeddings": 64,
                                                       "original_max_position_embeddings": 8, "sliding_window": 9}),
    "olmo2": ("olmo2", "Olmo2ForCausalLM", SPECIAL),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gguf_logits_match_transformers(tmp_path, case):
    arch, hf_arch, overrides = CASES[case]
    hf = save_tiny_model(tmp_path / "hf", hf_arch, **overrides)
    path = tmp_path / "model.gguf"
    assert write_hf_as_gguf(path, tmp_path / "hf", hf.config) == arch
    assert GGUFCheckpoint(path).hf_config["architectures"] == [hf_arch]
    model = jaxllm.load_model(path)
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 20)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


def test_gemma2_27b_attention_scale_follows_llama_cpp():
    """llama.cpp stores no query_pre_attn_scalar: the 27B models (46 layers) use hidden / heads."""
    from jaxllm.weights.gguf_families import _query_pre_attn_scalar

    cfg = {"num_hidden_layers": 46, "hidden_size": 4608, "num_attention_heads": 32, "head_dim": 128}
    assert _query_pre_attn_scalar("gemma2", cfg) == 144
    assert _query_pre_attn_scalar("gemma2", {**cfg, "num_hidden_layers": 42}) == 128
