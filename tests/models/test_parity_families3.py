"""GPT-J, OLMo, GLM / GLM-4, Nemotron, Cohere2, Ernie 4.5, EXAONE 4, OLMo 3, Seed-OSS and Falcon: fp32 logits of
jaxllm.load_model within 1e-4 relative of transformers on tiny random checkpoints (every weight, norms and biases
included, perturbed; sequences longer than the sliding windows), and their config fields and refusals."""

from __future__ import annotations

import pytest
from hf_models import check_logits

import jaxllm

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}  # ids inside the tiny vocabulary

CASES = {
    # rotate_every_two over the leading rotary_dim dims, parallel block from one LayerNorm, lm_head bias
    "gptj": ("GPTJForCausalLM", SPECIAL),
    "gptj-full-rotary-relu": ("GPTJForCausalLM", {**SPECIAL, "rotary_dim": 16, "activation_function": "relu",
                                                  "layer_norm_epsilon": 1e-2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    arch, overrides = CASES[case]
    check_logits(tmp_path, arch, **overrides)


BASE = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4}


@pytest.mark.parametrize("bad, match", [
    ({"architectures": ["GPTJForCausalLM"], "rotary_dim": None}, "rotary_dim=64"),
    ({"architectures": ["GPTJForCausalLM"], "rotary_dim": 7}, "rotary_dim=7"),
])
def test_unsupported_options_are_clear(bad, match):
    with pytest.raises(ValueError, match=match):
        jaxllm.config.ModelConfig.from_hf({**BASE, **bad})


def test_gptj_config_fields():
    cfg = jaxllm.config.ModelConfig.from_hf({"architectures": ["GPTJForCausalLM"], "vocab_size": 256, "n_embd": 64,
                                             "n_layer": 2, "n_head": 4, "rotary_dim": 8, "rope_theta": 5.0})
    assert (cfg.rotary_dim, cfg.rope.theta, cfg.rope_interleaved, cfg.norm_placement) == (8, 10000.0, True, "parallel")
    assert (cfg.intermediate_size, cfg.lm_head_bias, cfg.attention_bias, cfg.mlp_bias) == (256, True, False, True)
