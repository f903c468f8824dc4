"""GGUF files of Gemma 1/2/3, Phi-3 (longrope, partial rotary) and OLMo 2, written as llama.cpp's converter does
(tensor names from the ``gguf`` package's own name map, Gemma norms + 1, Phi-3's longrope factors as tensors):
jaxllm.load_model on the file gives transformers' fp32 logits within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from gguf_files import finish_gguf, gguf_writer
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


def write_family_gguf(path, model, arch: str):
    """``model`` as llama.cpp's converter writes it (f32 tensors, the metadata the loader reads)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)
    w = gguf_writer(path, arch, cfg)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    w.add_rope_freq_base(rope["rope_theta"])
    if getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if arch == "gemma3":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        arr = t.detach().float().numpy()
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            arr = arr + 1.0
        w.add_tensor(names.get_name(name, try_suffixes=(".weight",)), arr)
    if rope.get("rope_type") == "longrope":
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], np.float32))
    finish_gguf(w)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gguf_logits_match_transformers(tmp_path, case):
    arch, hf_arch, overrides = CASES[case]
    hf = save_tiny_model(tmp_path / "hf", hf_arch, **overrides)
    path = tmp_path / "model.gguf"
    write_family_gguf(path, hf, arch)
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
