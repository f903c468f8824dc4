"""GPT-J, OLMo, GLM / GLM-4, Nemotron, Cohere2, Ernie 4.5, EXAONE 4, OLMo 3, Seed-OSS and Falcon: fp32 logits of
jaxllm.load_model within 1e-4 relative of transformers on tiny random checkpoints (every weight, norms and biases
included, perturbed; sequences longer than the sliding windows), and their config fields and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import check_logits, hf_logits, relative_error, save_tiny_model

import jaxllm
from jaxllm.weights.mappings import key_map

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}  # ids inside the tiny vocabulary

CASES = {
    # rotate_every_two over the leading rotary_dim dims, parallel block from one LayerNorm, lm_head bias
    "gptj": ("GPTJForCausalLM", SPECIAL),
    "gptj-full-rotary-relu": ("GPTJForCausalLM", {**SPECIAL, "rotary_dim": 16, "activation_function": "relu",
                                                  "layer_norm_epsilon": 1e-2}),
    # non-parametric LayerNorms, clip_qkv before the rope, biases on all four projections
    "olmo-clip-bias": ("OlmoForCausalLM", {**SPECIAL, "clip_qkv": 0.5, "attention_bias": True}),
    "olmo-tied-mha": ("OlmoForCausalLM", {**SPECIAL, "tie_word_embeddings": True, "num_key_value_heads": 4}),
    # interleaved partial rotary, q/k/v biases, fused gate_up_proj; GLM-4's post-attention / post-MLP norms
    "glm": ("GlmForCausalLM", {**SPECIAL, "head_dim": 16}),
    "glm-quarter-rotary-no-bias": ("GlmForCausalLM", {**SPECIAL, "head_dim": 32, "attention_bias": False,
                                                      "partial_rotary_factor": 0.25}),
    "glm4": ("Glm4ForCausalLM", {**SPECIAL, "head_dim": 16}),
    "glm4-tied": ("Glm4ForCausalLM", {**SPECIAL, "head_dim": 16, "tie_word_embeddings": True,
                                      "rms_norm_eps": 1e-2}),
    # LayerNorm1P (1 + w, with bias), relu2 up_proj -> down_proj, partial rotary in halves
    "nemotron": ("NemotronForCausalLM", {**SPECIAL, "head_dim": 16, "norm_eps": 1e-2}),
    "nemotron-biases-tied": ("NemotronForCausalLM", {**SPECIAL, "attention_bias": True, "mlp_bias": True,
                                                     "tie_word_embeddings": True, "partial_rotary_factor": 1.0}),
    # sliding window with rope on 3 of 4 layers, a full-attention layer without rope
    "cohere2-window": ("Cohere2ForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "sliding_window": 5,
                                              "logit_scale": 0.3, "layer_norm_eps": 1e-2}),
    "cohere2-layer-types-bias-untied": ("Cohere2ForCausalLM", {
        **SPECIAL, "layer_types": ["full_attention", "sliding_attention"], "sliding_window": 6, "attention_bias": True,
        "tie_word_embeddings": False}),
    # interleaved rope over the whole head, use_bias on every linear layer
    "ernie4_5-bias": ("Ernie4_5ForCausalLM", {**SPECIAL, "head_dim": 16, "use_bias": True}),
    "ernie4_5-untied": ("Ernie4_5ForCausalLM", {**SPECIAL, "head_dim": 32, "tie_word_embeddings": False}),
    # post-norms, per-head q/k norms, windows on 3 of 4 layers with rope there only; no window: rope everywhere
    "exaone4-window": ("Exaone4ForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "sliding_window": 5}),
    "exaone4-no-window": ("Exaone4ForCausalLM", {**SPECIAL, "sliding_window": None,
                                                 "layer_types": ["full_attention"] * 2}),
    # OLMo 2 with windows on 3 of 4 layers and a rope per layer type (linear scaling on the full layers)
    "olmo3-window": ("Olmo3ForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "sliding_window": 5,
                                          "rope_theta": 1000.0, "rope_scaling": {"rope_type": "linear", "factor": 3.0}}),
    # q/k/v biases without an o_proj bias; every bias
    "seed-oss": ("SeedOssForCausalLM", {**SPECIAL, "head_dim": 16}),
    "seed-oss-all-biases": ("SeedOssForCausalLM", {**SPECIAL, "head_dim": 16, "attention_out_bias": True,
                                                   "mlp_bias": True, "tie_word_embeddings": True}),
    # query_key_value grouped per kv head with two parallel norms; one; multi-query; per-head interleaved, in sequence
    "falcon-new-two-norms-gqa": ("FalconForCausalLM", {**SPECIAL, "new_decoder_architecture": True, "num_kv_heads": 2,
                                                       "bias": True}),
    "falcon-new-one-norm": ("FalconForCausalLM", {**SPECIAL, "new_decoder_architecture": True, "num_kv_heads": 2,
                                                  "num_ln_in_parallel_attn": 1, "tie_word_embeddings": False}),
    "falcon-multi-query-parallel": ("FalconForCausalLM", {**SPECIAL, "layer_norm_epsilon": 1e-2}),
    "falcon-mha-sequential-bias": ("FalconForCausalLM", {**SPECIAL, "multi_query": False, "parallel_attn": False,
                                                         "bias": True}),
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
    ({"architectures": ["OlmoForCausalLM"], "clip_qkv": -1.0}, "clip_qkv=-1.0"),
    ({"architectures": ["Exaone4ForCausalLM"], "sliding_window_pattern": "LLLG"}, "sliding_window_pattern='LLLG'"),
    ({"architectures": ["Olmo3ForCausalLM"], "layer_types": ["full_attention"]}, "layer_types has 1 entries"),
    ({"architectures": ["FalconForCausalLM"], "alibi": True}, "alibi=True"),
    ({"architectures": ["FalconForCausalLM"], "num_ln_in_parallel_attn": 2}, "num_ln_in_parallel_attn=2"),
    ({"architectures": ["Olmo3ForCausalLM"], "sliding_window": None}, "sliding_window=None"),
    ({"architectures": ["FalconForCausalLM"], "new_decoder_architecture": True, "parallel_attn": False},
     "parallel_attn=False"),
])
def test_unsupported_options_are_clear(bad, match):
    with pytest.raises(ValueError, match=match):
        jaxllm.config.ModelConfig.from_hf({**BASE, **bad})


def test_gptj_config_fields():
    cfg = jaxllm.config.ModelConfig.from_hf({"architectures": ["GPTJForCausalLM"], "vocab_size": 256, "n_embd": 64,
                                             "n_layer": 2, "n_head": 4, "rotary_dim": 8, "rope_theta": 5.0})
    assert (cfg.rotary_dim, cfg.rope.theta, cfg.rope_interleaved, cfg.norm_placement) == (8, 10000.0, True, "parallel")
    assert (cfg.intermediate_size, cfg.lm_head_bias, cfg.attention_bias, cfg.mlp_bias) == (256, True, False, True)


def test_olmo_and_glm_config_fields():
    olmo = jaxllm.config.ModelConfig.from_hf({**BASE, "architectures": ["OlmoForCausalLM"], "rms_norm_eps": 0.5})
    assert (olmo.norm_type, olmo.norm_weight, olmo.rms_norm_eps, olmo.clip_qkv) == ("layer", False, 1e-5, None)
    glm = jaxllm.config.ModelConfig.from_hf({**BASE, "architectures": ["GlmForCausalLM"], "head_dim": 16})
    assert (glm.rotary_dim, glm.rope_interleaved, glm.num_kv_heads, glm.attention_bias, glm.attention_out_bias) == \
        (8, True, 2, True, False)
    glm4 = jaxllm.config.ModelConfig.from_hf({**BASE, "model_type": "glm4", "head_dim": 16,
                                              "rope_parameters": {"rope_theta": 10000.0, "partial_rotary_factor": 1.0}})
    assert (glm4.architecture, glm4.norm_placement, glm4.rotary_dim) == ("Glm4ForCausalLM", "sandwich", 0)


def test_olmo3_exaone4_seed_oss_config_fields():
    legacy = jaxllm.config.ModelConfig.from_hf({**BASE, "architectures": ["Olmo3ForCausalLM"], "rope_theta": 1234.0,
                                                "num_hidden_layers": 4,
                                                "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    assert (legacy.rope.theta, legacy.rope.rope_type, legacy.rope_local.theta) == (1234.0, "linear", 500000.0)
    assert legacy.sliding_windows == (4096,) * 3 + (None,) and legacy.layer_rope(0) == legacy.rope_local
    assert legacy.layer_rope(3) == legacy.rope
    exaone = jaxllm.config.ModelConfig.from_hf({**BASE, "num_hidden_layers": 4, "model_type": "exaone4",
                                                "layer_types": ["sliding_attention", "full_attention"] * 2})
    assert exaone.sliding_windows == (4096, None, 4096, None) and exaone.rope_layers == (True, False, True, False)
    seed = jaxllm.config.ModelConfig.from_hf({**BASE, "architectures": ["SeedOssForCausalLM"], "num_attention_heads": 16})
    assert (seed.attention_bias, seed.attention_out_bias, seed.head_dim, seed.num_kv_heads) == (True, False, 128, 8)


def test_glm_fused_gate_up_quantized_at_load(tmp_path):
    """quantization="int8" on GLM's fused gate_up_proj: the split gate / up are quantized like any weight."""
    hf = save_tiny_model(tmp_path, "GlmForCausalLM", **SPECIAL, head_dim=16)
    model = jaxllm.load_model(tmp_path, quantization="int8")
    assert model.layers[0].mlp.gate_up.qweight[...].dtype.name == "int8"
    ids = np.random.RandomState(2).randint(0, 256, (1, 16)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 5e-2


@pytest.mark.parametrize("arch", ["GlmForCausalLM", "FalconForCausalLM"])
def test_quantized_checkpoints_are_refused(arch):
    cfg = jaxllm.config.ModelConfig.from_hf({**BASE, "architectures": [arch], "quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": 32}})
    with pytest.raises(ValueError, match=f"quantization='awq' checkpoints of {arch} are not supported"):
        key_map(cfg)


def test_nemotron_plain_mlp_refuses_lora(tmp_path):
    from jaxllm import LLM

    save_tiny_model(tmp_path, "NemotronForCausalLM", **SPECIAL)
    with pytest.raises(ValueError, match="enable_lora=True is not supported for NemotronForCausalLM"):
        LLM(str(tmp_path), skip_tokenizer_init=True, enable_lora=True, enforce_eager=True)
