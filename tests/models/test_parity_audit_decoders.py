"""Transformers parity of every decoder architecture on the awkward config values real checkpoints use: attention
biases of every family that has them, yarn / dynamic / llama3 rope variants, head_dim independent of the hidden
size, MQA, tied and untied heads, activations, explicit ``layer_types``, Gemma 3's nested rope_parameters,
MoE layer patterns, and bf16 checkpoints loaded as float32. fp32 logits within 1e-4 relative of transformers
(every weight perturbed, sequences longer than windows and original rope lengths). Config values that transformers
reads in a non-obvious way (defaults, ignored fields, precedence) are compared field by field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hf_models import check_logits, hf_logits, relative_error, save_tiny_model

import jaxllm
from jaxllm.config import ModelConfig

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}  # ramp over the middle dims
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
# wider random weights: MLP inputs large enough that exact and tanh-approximated GELU differ beyond the tolerance
WIDE = {"initializer_range": 0.3}

CASES = {
    "llama-headdim-gelu": ("LlamaForCausalLM", {"head_dim": 32, "hidden_act": "gelu", **WIDE}),
    "llama-mqa-mlp-bias-tanh": ("LlamaForCausalLM", {"num_key_value_heads": 1, "mlp_bias": True, **WIDE,
                                                     "hidden_act": "gelu_pytorch_tanh", "rms_norm_eps": 1e-2}),
    "llama-yarn": ("LlamaForCausalLM", {"rope_scaling": YARN, "max_position_embeddings": 256}),
    "llama-yarn-mscale": ("LlamaForCausalLM", {"rope_scaling": {**YARN, "mscale": 0.9, "mscale_all_dim": 0.5,
                                                                "beta_fast": 16, "beta_slow": 2}}),
    "llama-yarn-attention-factor": ("LlamaForCausalLM", {"rope_scaling": {**YARN, "attention_factor": 1.3,
                                                                          "truncate": False}}),
    "llama-dynamic-dict-original": ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0,
                                                                          "original_max_position_embeddings": 8},
                                                         "max_position_embeddings": 16}),
    "llama3-short-original": ("LlamaForCausalLM", {"rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8}}),
    "mistral-headdim-window": ("MistralForCausalLM", {"head_dim": 32, "sliding_window": 5}),
    "mistral-yarn-mqa-no-window": ("MistralForCausalLM", {"rope_scaling": YARN, "sliding_window": None,
                                                          "num_key_value_heads": 1}),
    "qwen2-every-layer-windowed": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 5,
                                                        "max_window_layers": 0}),
    "qwen2-yarn-untied-mqa": ("Qwen2ForCausalLM", {"rope_scaling": YARN, "tie_word_embeddings": False,
                                                   "num_key_value_heads": 1}),
    "qwen3-bias-window": ("Qwen3ForCausalLM", {"attention_bias": True, "head_dim": 8, "use_sliding_window": True,
                                               "sliding_window": 5, "max_window_layers": 1}),
    "qwen3-yarn": ("Qwen3ForCausalLM", {"rope_scaling": YARN, "head_dim": 32}),
    "gemma-attention-bias": ("GemmaForCausalLM", {"attention_bias": True, "head_dim": 16}),
    "gemma-untied-hidden-activation-unread": ("GemmaForCausalLM", {"tie_word_embeddings": False, "head_dim": 32,
                                                                   "hidden_activation": "gelu", **WIDE}),
    "gemma2-exact-gelu": ("Gemma2ForCausalLM", {"hidden_activation": "gelu", "final_logit_softcapping": None,
                                                "head_dim": 16, **WIDE}),
    "gemma2-hidden-act-unread": ("Gemma2ForCausalLM", {"hidden_act": "gelu", "final_logit_softcapping": None,
                                                       "head_dim": 16, **WIDE}),
    "gemma2-attention-bias": ("Gemma2ForCausalLM", {"attention_bias": True, "head_dim": 16, "sliding_window": 5}),
    "gemma2-query-scalar-headdim": ("Gemma2ForCausalLM", {"query_pre_attn_scalar": 7, "head_dim": 32,
                                                          "sliding_window": 5}),
    "gemma2-layer-types-untied": ("Gemma2ForCausalLM", {"layer_types": ["full_attention", "sliding_attention"],
                                                        "sliding_window": 5, "tie_word_embeddings": False}),
    "gemma3-attention-bias": ("Gemma3ForCausalLM", {"attention_bias": True, "head_dim": 16, "sliding_window": 5}),
    "gemma3-layer-types-mqa": ("Gemma3ForCausalLM", {"layer_types": ["full_attention", "sliding_attention"],
                                                     "sliding_window": 5, "head_dim": 32, "num_key_value_heads": 1}),
    "gemma3-nested-rope-parameters": ("Gemma3ForCausalLM", {
        "head_dim": 16, "sliding_window": 5, "sliding_window_pattern": 2,
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}),
    "gemma3-yarn-global": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "sliding_window_pattern": 2,
                                                 "rope_scaling": YARN, "final_logit_softcapping": None}),
    "phi3-medium-heads": ("Phi3ForCausalLM", {**SPECIAL, "num_attention_heads": 8, "num_key_value_heads": 2}),
    "phi3-headdim-mqa-tied": ("Phi3ForCausalLM", {**SPECIAL, "head_dim": 24, "num_key_value_heads": 1,
                                                  "tie_word_embeddings": True}),
    "phi3-partial-gelu": ("Phi3ForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.5, "hidden_act": "gelu_new",
                                              **WIDE}),
    "olmo2-attention-bias": ("Olmo2ForCausalLM", {**SPECIAL, "attention_bias": True}),
    "olmo2-tied-mqa": ("Olmo2ForCausalLM", {**SPECIAL, "tie_word_embeddings": True, "num_key_value_heads": 1}),
    "olmo2-rope-headdim": ("Olmo2ForCausalLM", {**SPECIAL, "head_dim": 32,
                                                "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "mixtral-jitter-window-headdim": ("MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2,
                                                             "router_jitter_noise": 0.1, "sliding_window": 5,
                                                             "head_dim": 32}),
    "mixtral-top1-tied": ("MixtralForCausalLM", {"num_local_experts": 3, "num_experts_per_tok": 1,
                                                 "tie_word_embeddings": True}),
    "qwen3moe-sparse-step": ("Qwen3MoeForCausalLM", {**MOE, "decoder_sparse_step": 2, "num_hidden_layers": 3}),
    "qwen3moe-mlp-only-no-norm": ("Qwen3MoeForCausalLM", {**MOE, "mlp_only_layers": [0], "norm_topk_prob": False}),
    "qwen3moe-norm-bias-headdim": ("Qwen3MoeForCausalLM", {**MOE, "norm_topk_prob": True, "attention_bias": True,
                                                           "head_dim": 8}),
    "qwen3moe-window": ("Qwen3MoeForCausalLM", {**MOE, "sliding_window": 5, "use_sliding_window": True}),
    "qwen2moe-window-sparse-step": ("Qwen2MoeForCausalLM", {**MOE, "shared_expert_intermediate_size": 24,
                                                            "sliding_window": 5, "use_sliding_window": True,
                                                            "decoder_sparse_step": 2, "num_hidden_layers": 3,
                                                            "tie_word_embeddings": True}),
    "qwen2moe-no-qkv-bias-headdim": ("Qwen2MoeForCausalLM", {**MOE, "shared_expert_intermediate_size": 24,
                                                             "qkv_bias": False, "head_dim": 32}),
    "olmoe-bias-norm-topk": ("OlmoeForCausalLM", {**SPECIAL, "num_experts": 4, "num_experts_per_tok": 2,
                                                  "intermediate_size": 32, "attention_bias": True,
                                                  "norm_topk_prob": True, "tie_word_embeddings": True}),
    "granite-yarn-gelu": ("GraniteForCausalLM", {"rope_scaling": YARN, "hidden_act": "gelu", "residual_multiplier": 0.2,
                                                 "embedding_multiplier": 12.0, **WIDE}),
    "smollm3-yarn-mqa": ("SmolLM3ForCausalLM", {**SPECIAL, "rope_scaling": YARN, "num_key_value_heads": 1,
                                                "no_rope_layer_interval": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    arch, overrides = CASES[case]
    check_logits(tmp_path, arch, **overrides)


@pytest.mark.parametrize("arch, overrides", [
    ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    ("Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 5}),
    ("Qwen3MoeForCausalLM", MOE),
    ("CohereForCausalLM", {"use_qk_norm": True}),  # LayerNorms
    ("GPT2LMHeadModel", {}),  # learned positions, Conv1D weights
    ("OPTForCausalLM", {"word_embed_proj_dim": 32}),  # projected embeddings
])
def test_bf16_checkpoint_loaded_as_float32(tmp_path, arch, overrides):
    """A bf16 checkpoint with dtype="float32": the same logits as transformers loading it in float32."""
    save_tiny_model(tmp_path, arch, dtype=torch.bfloat16, **overrides)
    hf = getattr(transformers, arch).from_pretrained(tmp_path, dtype=torch.float32).eval()
    model = jaxllm.load_model(tmp_path, dtype="float32")
    assert model.embed[...].dtype.name == "float32"
    ids = np.random.RandomState(2).randint(0, 256, (1, 20)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


BASE = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 30,
        "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.mark.parametrize("arch, model_type, extra", [
    ("MistralForCausalLM", "mistral", {}),  # no sliding_window key: MistralConfig's 4096
    ("MistralForCausalLM", "mistral", {"sliding_window": None}),
    ("MixtralForCausalLM", "mixtral", {**MOE, "num_local_experts": 4}),
    ("Qwen2ForCausalLM", "qwen2", {"sliding_window": 4096, "use_sliding_window": False}),
    ("Qwen2ForCausalLM", "qwen2", {"sliding_window": 64, "use_sliding_window": True}),  # max_window_layers 28
    ("Qwen3ForCausalLM", "qwen3", {"sliding_window": 64, "use_sliding_window": True, "max_window_layers": 10}),
    ("Qwen3MoeForCausalLM", "qwen3_moe", {**MOE, "sliding_window": 4096, "use_sliding_window": False}),
    ("Qwen3MoeForCausalLM", "qwen3_moe", {**MOE, "sliding_window": 64, "use_sliding_window": True}),
    ("Qwen2MoeForCausalLM", "qwen2_moe", {**MOE, "sliding_window": 64, "use_sliding_window": True}),  # even < 28
    ("Qwen2MoeForCausalLM", "qwen2_moe", {**MOE, "sliding_window": 64, "use_sliding_window": False}),
    ("SmolLM3ForCausalLM", "smollm3", {"sliding_window": 64, "use_sliding_window": True}),  # the no-rope layers
    ("SmolLM3ForCausalLM", "smollm3", {"sliding_window": 64, "no_rope_layer_interval": 3}),
])
def test_sliding_window_defaults_follow_transformers(arch, model_type, extra):
    raw = {**BASE, **extra}
    ours = ModelConfig.from_hf({**raw, "model_type": model_type, "architectures": [arch]}).sliding_windows
    cfg = transformers.AutoConfig.for_model(model_type, **raw)
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None) or ["sliding_attention"] * cfg.num_hidden_layers
    assert ours == tuple(window if t == "sliding_attention" else None for t in types)


def test_attention_biases_as_transformers_builds_them():
    """Mistral / Mixtral / Phi-3 attention never has biases; Qwen2's q/k/v always do and its o_proj never; the
    other families put ``attention_bias`` on all four projections."""
    def biases(arch, **kw):
        cfg = ModelConfig.from_hf({**BASE, "num_hidden_layers": 2, "architectures": [arch], "num_local_experts": 4,
                                   "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, **kw})
        return cfg.attention_bias, cfg.attention_out_bias

    for arch in ("MistralForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM"):
        assert biases(arch, attention_bias=True) == (False, False)
    assert biases("Qwen2ForCausalLM", attention_bias=False) == (True, False)
    for arch in ("LlamaForCausalLM", "Qwen3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM",
                 "Gemma3ForCausalLM", "Olmo2ForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM",
                 "GraniteForCausalLM", "SmolLM3ForCausalLM"):
        assert biases(arch, attention_bias=True) == (True, True) and biases(arch) == (False, False)
    # Qwen2-MoE reads qkv_bias (default true), never attention_bias; its o_proj has none
    assert biases("Qwen2MoeForCausalLM", attention_bias=False) == (True, False)
    assert biases("Qwen2MoeForCausalLM", attention_bias=True, qkv_bias=False) == (False, False)


def test_rope_original_length_precedence():
    """dynamic NTK grows past max_position_embeddings (a rope dict's original length is not read); Phi-3's
    top-level original_max_position_embeddings wins over the rope dict's (default 4096); yarn's factor defaults
    to max / original positions."""
    base = {**BASE, "num_hidden_layers": 2, "max_position_embeddings": 1024}
    dyn = ModelConfig.from_hf({**base, "architectures": ["LlamaForCausalLM"], "rope_scaling": {
        "rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 64}})
    assert dyn.rope.get("original_max_position_embeddings") == 1024
    factors = {"short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    phi = {**base, "architectures": ["Phi3ForCausalLM"], "head_dim": 16}
    top = ModelConfig.from_hf({**phi, "original_max_position_embeddings": 256, "rope_scaling": {
        "rope_type": "longrope", "original_max_position_embeddings": 128, **factors}})
    assert top.rope.get("original_max_position_embeddings") == 256
    default = ModelConfig.from_hf({**phi, "rope_scaling": {"rope_type": "longrope", **factors}})
    assert default.rope.get("original_max_position_embeddings") == 4096
    yarn = ModelConfig.from_hf({**base, "architectures": ["Qwen2ForCausalLM"], "rope_scaling": {
        "rope_type": "yarn", "original_max_position_embeddings": 256}})
    assert yarn.rope.rope_type == "yarn" and yarn.rope.get("factor") == 4.0


@pytest.mark.parametrize("bad, match", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": -2.0}}, "yarn rope scaling needs a positive 'factor'"),
    ({"rope_scaling": {"rope_type": "mrope", "mrope_section": [2, 2, 4]}}, "rope type 'mrope' is not supported"),
    ({"hidden_act": "relu6"}, "hidden_act='relu6'"),
])
def test_unsupported_values_are_clear(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf({**BASE, "num_hidden_layers": 2, "architectures": ["LlamaForCausalLM"], **bad})


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                                        "phi3", "olmo2", "mixtral", "qwen3_moe", "qwen2_moe", "olmoe", "granite",
                                        "smollm3", "starcoder2", "cohere"])
def test_absent_fields_take_transformers_defaults(model_type):
    """A config.json that states only the sizes: norm eps, rope base, context length, tied head and sliding
    windows are what transformers' config class of the family makes of it."""
    raw = {**BASE, "num_hidden_layers": 2, "head_dim": 16, "num_local_experts": 4, **MOE}
    ours = ModelConfig.from_hf({**raw, "model_type": model_type})
    hf = transformers.AutoConfig.for_model(model_type, **raw)
    rope = hf.rope_parameters.get("full_attention", hf.rope_parameters)
    types = getattr(hf, "layer_types", None) or ["sliding_attention"] * hf.num_hidden_layers
    window = getattr(hf, "sliding_window", None)
    eps = getattr(hf, "rms_norm_eps", None) or getattr(hf, "norm_epsilon", None) or hf.layer_norm_eps
    assert ours.rms_norm_eps == eps and ours.rope.theta == rope["rope_theta"]
    assert ours.max_position_embeddings == hf.max_position_embeddings
    assert ours.tie_word_embeddings == hf.tie_word_embeddings
    assert ours.sliding_windows == tuple(window if t == "sliding_attention" else None for t in types)


@pytest.mark.parametrize("arch, fields, expected", [
    ("GemmaForCausalLM", {"hidden_act": "gelu"}, "gelu_tanh"),  # GemmaConfig's legacy rewrite
    ("GemmaForCausalLM", {"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu"}, "gelu_tanh"),
    ("Gemma2ForCausalLM", {"hidden_act": "gelu"}, "gelu_tanh"),  # Gemma 2/3 read hidden_activation only
    ("Gemma3ForCausalLM", {"hidden_activation": "gelu", "hidden_act": "gelu_pytorch_tanh"}, "gelu"),
    ("Phi3ForCausalLM", {"hidden_act": "gelu_new"}, "gelu_tanh"),
    ("Olmo2ForCausalLM", {"hidden_act": "gelu"}, "gelu"),
])
def test_activation_from_the_field_transformers_reads(arch, fields, expected):
    cfg = ModelConfig.from_hf({**BASE, "num_hidden_layers": 2, "head_dim": 16, "architectures": [arch], **fields})
    assert cfg.hidden_act == expected


@pytest.mark.parametrize("rope", [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},  # Qwen2.5 / Qwen3 long context
    {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32,
     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8192, "attention_factor": 1.1,
     "truncate": False},
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "linear", "factor": 8.0},
])
def test_rope_frequencies_at_real_sizes(rope):
    """Inverse frequencies and cos/sin scale of real-size ropes (head_dim 128, base 1e6) equal transformers'."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from jaxllm.models.layers import rope_attention_factor, rope_inv_freq

    raw = {**BASE, "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 2, "head_dim": 128,
           "max_position_embeddings": 131072, "rope_theta": 1e6, "rope_scaling": rope}
    ours = ModelConfig.from_hf({**raw, "architectures": ["Qwen2ForCausalLM"]}).rope
    hf = transformers.Qwen2Config(**raw)
    inv, scale = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf, "cpu")
    np.testing.assert_allclose(rope_inv_freq(ours, 128), inv.double().numpy(), rtol=1e-6)
    assert rope_attention_factor(ours) == pytest.approx(scale, rel=1e-6)
