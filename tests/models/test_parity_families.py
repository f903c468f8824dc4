"""Gemma 1/2/3, Phi-3/3.5/4, OLMo 2, Granite, SmolLM3, Starcoder2, Cohere, GPT-2, GPT-NeoX, Phi, StableLM and OPT: fp32 logits of jaxllm.load_model within 1e-4 relative of transformers on
tiny random checkpoints (every weight, norms included, perturbed; sequences longer than the sliding windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from hf_models import check_logits, hf_logits, relative_error, save_tiny_model

import jaxllm

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}  # ids inside the tiny vocabulary


def longrope(dim: int, original: int) -> dict:
    """A longrope scaling with distinct short/long factors (dim: the rotated dims of a head)."""
    rng = np.random.RandomState(0)
    return {"rope_type": "longrope", "short_factor": [float(x) for x in 1.0 + rng.rand(dim // 2)],
            "long_factor": [float(x) for x in 2.0 + 4 * rng.rand(dim // 2)],
            "original_max_position_embeddings": original}


# Granite's multipliers far from 1, so a missing or misplaced one cannot pass
GRANITE = {"embedding_multiplier": 6.0, "residual_multiplier": 0.3, "attention_multiplier": 0.05,
           "logits_scaling": 4.0}

CASES = {
    "gemma-mqa": ("GemmaForCausalLM", {"head_dim": 32, "num_key_value_heads": 1}),
    "gemma2-softcap-window": ("Gemma2ForCausalLM", {"head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 24,
                                                    "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    "gemma2-no-caps": ("Gemma2ForCausalLM", {"sliding_window": 7, "attn_logit_softcapping": None,
                                             "final_logit_softcapping": None}),
    "gemma3-local-global": ("Gemma3ForCausalLM", {"head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 24,
                                                  "num_hidden_layers": 3, "sliding_window_pattern": 2,
                                                  "rope_scaling": {"rope_type": "linear", "factor": 4.0},
                                                  "rope_local_base_freq": 100.0, "rope_theta": 5000.0}),
    "gemma3-softcap": ("Gemma3ForCausalLM", {"sliding_window": 6, "attn_logit_softcapping": 3.0,
                                             "final_logit_softcapping": 5.0}),
    "phi3": ("Phi3ForCausalLM", SPECIAL),
    "phi3-window": ("Phi3ForCausalLM", {**SPECIAL, "sliding_window": 6}),
    "phi3-longrope-long": ("Phi3ForCausalLM", {**SPECIAL, "rope_scaling": longrope(16, 8),
                                               "original_max_position_embeddings": 8}),
    "phi3-longrope-short": ("Phi3ForCausalLM", {**SPECIAL, "rope_scaling": longrope(16, 64),
                                                "original_max_position_embeddings": 64}),
    "phi4-mini-partial-rotary": ("Phi3ForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.75,
                                                     "tie_word_embeddings": True, "rope_scaling": longrope(12, 8),
                                                     "original_max_position_embeddings": 8}),
    "olmo2": ("Olmo2ForCausalLM", SPECIAL),
    "olmo2-mha": ("Olmo2ForCausalLM", {**SPECIAL, "num_key_value_heads": 4}),
    "granite-multipliers-biases": ("GraniteForCausalLM", {**SPECIAL, **GRANITE, "attention_bias": True,
                                                          "mlp_bias": True}),
    "granite-tied-mqa": ("GraniteForCausalLM", {**SPECIAL, **GRANITE, "tie_word_embeddings": True,
                                                "num_key_value_heads": 1, "logits_scaling": 0.25}),
    "smollm3-no-rope-interval": ("SmolLM3ForCausalLM", {**SPECIAL, "no_rope_layer_interval": 2,
                                                        "num_hidden_layers": 4}),
    "smollm3-default-interval-untied": ("SmolLM3ForCausalLM", {**SPECIAL, "num_hidden_layers": 4,
                                                               "tie_word_embeddings": False}),
    "smollm3-window-on-no-rope-layers": ("SmolLM3ForCausalLM", {**SPECIAL, "no_rope_layers": [1, 0, 1, 0],
                                                                "num_hidden_layers": 4, "use_sliding_window": True,
                                                                "sliding_window": 5, "attention_bias": True}),
    "starcoder2-biases-window": ("Starcoder2ForCausalLM", {**SPECIAL, "sliding_window": 5}),
    "starcoder2-no-bias-untied-mqa": ("Starcoder2ForCausalLM", {**SPECIAL, "use_bias": False, "num_key_value_heads": 1,
                                                                "tie_word_embeddings": False, "norm_epsilon": 1e-2}),
    "cohere-logit-scale": ("CohereForCausalLM", {**SPECIAL, "logit_scale": 0.3, "layer_norm_eps": 1e-2}),
    "cohere-qk-norm-bias-untied": ("CohereForCausalLM", {**SPECIAL, "use_qk_norm": True, "attention_bias": True,
                                                         "tie_word_embeddings": False}),
    # learned positions (a table of exactly 24 rows: every one is read), Conv1D weights, fused c_attn
    "gpt2-exact-positions": ("GPT2LMHeadModel", {**SPECIAL, "max_position_embeddings": 24,
                                                 "layer_norm_epsilon": 1e-2}),
    "gpt2-relu-untied": ("GPT2LMHeadModel", {**SPECIAL, "activation_function": "relu", "tie_word_embeddings": False}),
    "neox-parallel-residual": ("GPTNeoXForCausalLM", {**SPECIAL, "rotary_pct": 0.5}),
    "neox-sequential-no-bias": ("GPTNeoXForCausalLM", {**SPECIAL, "use_parallel_residual": False,
                                                       "attention_bias": False, "layer_norm_eps": 1e-2}),
    "phi": ("PhiForCausalLM", SPECIAL),
    "phi-qk-layernorm-gqa": ("PhiForCausalLM", {**SPECIAL, "qk_layernorm": True, "partial_rotary_factor": 0.25}),
    "stablelm": ("StableLmForCausalLM", SPECIAL),
    "stablelm-parallel-qk-norm-bias": ("StableLmForCausalLM", {**SPECIAL, "use_parallel_residual": True,
                                                               "qk_layernorm": True, "use_qkv_bias": True}),
    "opt": ("OPTForCausalLM", SPECIAL),
    "opt-post-norm-projected-no-bias": ("OPTForCausalLM", {**SPECIAL, "do_layer_norm_before": False,
                                                           "word_embed_proj_dim": 32, "enable_bias": False}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    arch, overrides = CASES[case]
    check_logits(tmp_path, arch, **overrides)


def test_family_config_fields(tmp_path):
    arch, overrides = CASES["gemma3-local-global"]
    save_tiny_model(tmp_path, arch, **overrides)
    cfg = jaxllm.config.ModelConfig.from_pretrained(tmp_path)
    assert cfg.sliding_windows == (5, None, 5)
    assert cfg.rope_local.theta == 100.0 and cfg.rope.theta == 5000.0 and cfg.rope.rope_type == "linear"
    assert cfg.layer_rope(0) is cfg.rope_local and cfg.layer_rope(1) is cfg.rope
    assert cfg.sm_scale == 24 ** -0.5 and cfg.norm_offset == 1.0 and cfg.qk_norm == "head"
    assert cfg.norm_placement == "sandwich" and cfg.hidden_act == "gelu_tanh"


def test_granite_and_smollm3_config_fields():
    base = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 8,
            "num_attention_heads": 4, "num_key_value_heads": 2}
    granite = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["GraniteForCausalLM"], **GRANITE})
    assert (granite.embedding_multiplier, granite.residual_multiplier, granite.logits_scaling) == (6.0, 0.3, 4.0)
    assert granite.sm_scale == 0.05
    assert jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["GraniteForCausalLM"]}).sm_scale == 1.0
    smol = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["SmolLM3ForCausalLM"],
                                             "use_sliding_window": True, "sliding_window": 16})
    assert smol.rope_layers == (True, True, True, False) * 2 and not smol.uses_rope(3)
    assert smol.sliding_windows == (None, None, None, 16) * 2  # windows on the no-rope layers
    assert smol.rope.theta == 2e6 and smol.tie_word_embeddings
    with pytest.raises(ValueError, match="no_rope_layers has 2 entries"):
        jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["SmolLM3ForCausalLM"], "no_rope_layers": [1, 0]})
    with pytest.raises(ValueError, match="logits_scaling=0"):
        jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["GraniteForCausalLM"], "logits_scaling": 0})


def test_starcoder2_and_cohere_config_fields():
    base = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2}
    star = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["Starcoder2ForCausalLM"],
                                             "sliding_window": 16, "norm_epsilon": 1e-3})
    assert (star.norm_type, star.norm_bias, star.mlp_type, star.hidden_act) == ("layer", True, "plain", "gelu_tanh")
    assert star.attention_bias and star.attention_out_bias and star.mlp_bias and star.rms_norm_eps == 1e-3
    assert star.sliding_windows == (16, 16, 16) and star.tie_word_embeddings
    cohere = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["CohereForCausalLM"], "use_qk_norm": True})
    assert (cohere.norm_placement, cohere.norm_type, cohere.norm_bias, cohere.qk_norm) == ("parallel", "layer", False,
                                                                                          "per_head")
    assert cohere.rope_interleaved and cohere.logit_scale == 0.0625 and cohere.tie_word_embeddings


def test_non_gated_mlp_refuses_lora(tmp_path):
    """LoRA targets the gated MLP's projections: Starcoder2's c_fc / c_proj model is a clear ValueError."""
    from jaxllm import LLM

    save_tiny_model(tmp_path, "Starcoder2ForCausalLM", **SPECIAL)
    with pytest.raises(ValueError, match="enable_lora=True is not supported for Starcoder2ForCausalLM"):
        LLM(str(tmp_path), skip_tokenizer_init=True, enable_lora=True, enforce_eager=True)


def test_legacy_config_formats():
    """transformers 4.x config.json spellings: Gemma 1's "gelu", Gemma 3's rope_local_base_freq and
    sliding_window_pattern, Phi-3's "su" rope scaling."""
    base = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    gemma = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["GemmaForCausalLM"], "hidden_act": "gelu"})
    assert gemma.hidden_act == "gelu_tanh" and gemma.embed_scale and gemma.tie_word_embeddings  # Gemma ties
    # transformers' Gemma 1 reads hidden_act only (GemmaConfig defaults it to gelu-tanh)
    ignored = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["GemmaForCausalLM"],
                                                "hidden_activation": "gelu"})
    assert ignored.hidden_act == "gelu_tanh"
    g3 = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["Gemma3ForCausalLM"], "rope_theta": 1e6,
                                           "rope_local_base_freq": 1e4, "sliding_window": 512,
                                           "sliding_window_pattern": 3,
                                           "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    assert g3.sliding_windows == (512, 512, None, 512, 512, None)
    assert (g3.rope.theta, g3.rope.get("factor"), g3.rope_local.theta) == (1e6, 8.0, 1e4)
    phi = jaxllm.config.ModelConfig.from_hf({**base, "architectures": ["Phi3ForCausalLM"],
                                            "max_position_embeddings": 1024, "original_max_position_embeddings": 256,
                                            "rope_scaling": {"type": "su", "short_factor": [1.0] * 8,
                                                             "long_factor": [2.0] * 8}})
    assert phi.rope.rope_type == "longrope" and phi.rope.get("factor") == 4.0
    assert phi.rope.get("original_max_position_embeddings") == 256 and phi.fused_checkpoint


@pytest.mark.parametrize("bad, match", [
    ({"architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": 0}, "attn_logit_softcapping=0"),
    ({"architectures": ["Gemma2ForCausalLM"], "layer_types": ["sliding_attention", "chunked_attention"]},
     "chunked_attention"),
    ({"architectures": ["Phi3ForCausalLM"], "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8}},
     "long_factor"),
    ({"architectures": ["Phi3ForCausalLM"], "partial_rotary_factor": 1.5}, "partial_rotary_factor=1.5"),
    ({"architectures": ["Gemma2ForCausalLM"], "hidden_activation": "relu6"}, "hidden_act='relu6'"),
    ({"architectures": ["Phi3ForCausalLM"], "quantization_config": {"quant_method": "awq", "bits": 4,
                                                                    "group_size": 32}}, "fused qkv_proj"),
])
def test_bad_family_configs_are_clear(bad, match):
    base = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
    with pytest.raises(ValueError, match=match):
        jaxllm.config.ModelConfig.from_hf({**base, **bad})


def test_phi3_fused_weights_quantized_at_load(tmp_path):
    """quantization="int8" on a fused checkpoint: the split q/k/v and gate_up are quantized like any weight."""
    hf = save_tiny_model(tmp_path, "Phi3ForCausalLM", **SPECIAL)
    model = jaxllm.load_model(tmp_path, quantization="int8")
    assert model.layers[0].self_attn.k_proj.qweight[...].dtype.name == "int8"
    ids = np.random.RandomState(2).randint(0, 256, (1, 16)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 5e-2


def test_gemma3_multimodal_checkpoint_runs_its_language_model(tmp_path):
    """A Gemma3ForConditionalGeneration checkpoint (as Gemma 3 4B/12B/27B ship): text prompts run its language
    model (keys under language_model.*; the vision tower's are not loaded), logits equal transformers'
    text-only forward; a hub-style partial text_config takes transformers' defaults."""
    import json

    import torch
    import transformers

    torch.manual_seed(0)
    text = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 5,
            "sliding_window_pattern": 2, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 28, "patch_size": 14}
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                    image_token_index=255, boi_token_index=254, eoi_token_index=253)
    hf = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    model = jaxllm.load_model(tmp_path)
    assert model.config.architecture == "Gemma3ForCausalLM"
    assert model.config.multimodal_architecture == "Gemma3ForConditionalGeneration"
    ids = np.random.RandomState(3).randint(0, 250, (2, 16)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4
    hub_style = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "eos_token_id": [1, 106],
                 "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                                 "num_hidden_layers": 34, "sliding_window": 1024,
                                 "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}}
    parsed = jaxllm.config.ModelConfig.from_hf(json.loads(json.dumps(hub_style)))
    assert (parsed.num_heads, parsed.head_dim, parsed.vocab_size, parsed.eos_token_ids) == (8, 256, 262208, (1, 106))
    assert parsed.sliding_windows[:6] == (1024,) * 5 + (None,) and parsed.rope.get("factor") == 8.0


def test_classic_config_fields():
    """GPT-2 / OPT / GPT-NeoX spellings read under the shared names; settings these families do not implement are
    a ValueError naming the field."""
    gpt2 = jaxllm.config.ModelConfig.from_hf({"architectures": ["GPT2LMHeadModel"], "vocab_size": 256, "n_embd": 64,
                                             "n_layer": 2, "n_head": 4, "n_positions": 32, "n_inner": None})
    assert (gpt2.intermediate_size, gpt2.max_position_embeddings, gpt2.position_embedding) == (256, 32, "learned")
    assert gpt2.hidden_act == "gelu_tanh" and gpt2.tie_word_embeddings and gpt2.rope_layers == (False, False)
    assert gpt2.attention_bias and gpt2.attention_out_bias and gpt2.mlp_bias and gpt2.num_kv_heads == 4
    for field in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        with pytest.raises(ValueError, match=f"{field}=True is not supported"):
            jaxllm.config.ModelConfig.from_hf({"model_type": "gpt2", "vocab_size": 256, field: True})
    opt = jaxllm.config.ModelConfig.from_hf({"model_type": "opt", "vocab_size": 256, "hidden_size": 64, "ffn_dim": 96,
                                            "num_hidden_layers": 2, "num_attention_heads": 4,
                                            "word_embed_proj_dim": 32, "do_layer_norm_before": False})
    assert (opt.intermediate_size, opt.embed_proj_dim, opt.position_offset, opt.hidden_act) == (96, 32, 2, "relu")
    assert opt.norm_placement == "post_residual" and not opt.final_norm
    with pytest.raises(ValueError, match="layer_norm_elementwise_affine=False"):
        jaxllm.config.ModelConfig.from_hf({"model_type": "opt", "vocab_size": 256, "hidden_size": 64, "ffn_dim": 96,
                                          "num_hidden_layers": 2, "num_attention_heads": 4,
                                          "layer_norm_elementwise_affine": False})
    neox = jaxllm.config.ModelConfig.from_hf({"model_type": "gpt_neox", "vocab_size": 256, "hidden_size": 64,
                                             "intermediate_size": 96, "num_hidden_layers": 2,
                                             "num_attention_heads": 4, "rotary_pct": 0.5, "rotary_emb_base": 500})
    assert (neox.rotary_dim, neox.rope.theta, neox.norm_placement) == (8, 500.0, "parallel_two")


def test_learned_positions_bound_the_context(tmp_path):
    """A model with learned positions: max_model_len defaults to the table's length; a longer one is refused
    even with allow_long_max_model_len, and the dense forward refuses a longer input."""
    from hf_models import hf_greedy

    from jaxllm import LLM, SamplingParams

    hf = save_tiny_model(tmp_path, "GPT2LMHeadModel", **SPECIAL, max_position_embeddings=16)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True)
    assert llm.llm_engine.max_model_len == 16
    prompt = list(range(3, 13))  # 10 tokens: the sequence stops at the table's 16 positions
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
                       use_tqdm=False)[0].outputs[0]
    assert out.token_ids == hf_greedy(hf, prompt, 6) and out.finish_reason == "length"
    with pytest.raises(ValueError, match="learned positions"):
        LLM(str(tmp_path), skip_tokenizer_init=True, max_model_len=32, allow_long_max_model_len=True,
            enforce_eager=True)
    with pytest.raises(ValueError, match="17 tokens exceed the model's 16 learned positions"):
        jaxllm.load_model(tmp_path)(np.zeros((1, 17), np.int32))


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox", "phi", "stablelm", "opt"])
def test_classic_absent_fields_take_transformers_defaults(model_type):
    """A config.json with only the sizes (and a stray head_dim / num_key_value_heads that transformers' modeling
    code of these families does not read): norm eps, context length, tied head, rotary dims and kv heads as
    transformers makes of it."""
    raw = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4}
    raw = {**raw, "head_dim": 8, "num_key_value_heads": 2}
    ours = jaxllm.config.ModelConfig.from_hf({**raw, "model_type": model_type})
    hf = transformers.AutoConfig.for_model(model_type, **raw)
    eps = getattr(hf, "layer_norm_epsilon", None) or getattr(hf, "layer_norm_eps", None) or 1e-5  # (OPT: torch's)
    assert ours.rms_norm_eps == eps and ours.max_position_embeddings == hf.max_position_embeddings
    assert ours.tie_word_embeddings == hf.tie_word_embeddings and ours.head_dim == 16
    assert ours.num_kv_heads == (2 if model_type in ("phi", "stablelm") else 4)  # (the others are multi-head)
    rope = getattr(hf, "rope_parameters", None)
    if rope:
        assert ours.rope.theta == rope["rope_theta"]
        assert (ours.rotary_dim or 16) == int(16 * rope["partial_rotary_factor"])


@pytest.mark.parametrize("arch, rename, extra", [
    # the hub's gpt2: GPT2Model keys (no "transformer.") and the causal-mask buffers of older transformers
    ("GPT2LMHeadModel", lambda k: k.removeprefix("transformer."), ("h.0.attn.bias", "h.1.attn.masked_bias")),
    ("GPTNeoXForCausalLM", lambda k: k, ("gpt_neox.layers.0.attention.bias", "gpt_neox.layers.0.attention.masked_bias",
                                         "gpt_neox.layers.1.attention.rotary_emb.inv_freq")),
    ("OPTForCausalLM", lambda k: k.removeprefix("model."), ()),  # OPTModel keys ("decoder.")
])
def test_classic_hub_checkpoint_layouts(tmp_path, arch, rename, extra):
    """Checkpoints as the hub ships them: other key prefixes and buffers that hold no weights load to the same
    logits."""
    from safetensors.numpy import load_file, save_file

    hf = save_tiny_model(tmp_path, arch, **SPECIAL)
    path = tmp_path / "model.safetensors"
    tensors = {rename(k): v for k, v in load_file(path).items()}
    tensors.update({k: np.ones((1, 1, 4, 4), np.float32) for k in extra})
    save_file(tensors, path, metadata={"format": "pt"})
    ids = np.random.RandomState(1).randint(0, 256, (1, 20)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(tmp_path)(ids)), hf_logits(hf, ids)) <= 1e-4


def _fake_int8(w: np.ndarray, in_axis: int) -> np.ndarray:
    """Quantize-dequantize a weight per output channel (the max over ``in_axis``), in numpy."""
    absmax = np.abs(w).max(axis=in_axis, keepdims=True)
    scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    return (np.round(np.clip(w / scale, -127, 127)) * scale).astype(np.float32)


@pytest.mark.parametrize("arch, linears", [
    ("GPT2LMHeadModel", ("c_attn", "c_proj", "c_fc")),  # Conv1D [in, out]: channels are columns
    ("GPTNeoXForCausalLM", ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
    ("PhiForCausalLM", ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")),
    ("OPTForCausalLM", ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")),
])
def test_classic_int8_matches_numpy_quantized_checkpoint(tmp_path, arch, linears):
    """quantization="int8" quantizes every decoder linear weight per output channel (the fused c_attn /
    query_key_value too): the logits equal transformers' on a checkpoint quantized-dequantized in numpy."""
    save_tiny_model(tmp_path / "orig", arch, **SPECIAL)
    hf = save_tiny_model(tmp_path / "ref", arch, **SPECIAL)  # same seed: the same weights
    in_axis = 0 if arch == "GPT2LMHeadModel" else 1
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".weight") and name.split(".")[-2] in linears and (".h." in name or ".layers." in name):
                p.copy_(torch.from_numpy(_fake_int8(p.numpy(), in_axis)))
    ids = np.random.RandomState(1).randint(0, 256, (1, 20)).astype(np.int32)
    ours = np.asarray(jaxllm.load_model(tmp_path / "orig", quantization="int8")(ids))
    assert relative_error(ours, hf_logits(hf, ids)) <= 1e-5
    assert relative_error(ours, hf_logits(save_tiny_model(tmp_path / "plain", arch, **SPECIAL), ids)) > 1e-5


def test_classic_families_refuse_lora(tmp_path):
    """LoRA targets gated MLPs: GPT-2's plain MLP is a clear ValueError naming the architecture."""
    from jaxllm import LLM

    save_tiny_model(tmp_path, "GPT2LMHeadModel", **SPECIAL)
    with pytest.raises(ValueError, match="enable_lora=True is not supported for GPT2LMHeadModel"):
        LLM(str(tmp_path), skip_tokenizer_init=True, enable_lora=True, enforce_eager=True)


def test_stablelm_lora_matches_peft_merged(tmp_path):
    """StableLM's gated MLP and q/k/v/o take LoRA adapters like Llama's: a PEFT adapter over all seven projections
    gives the PEFT-merged model's greedy tokens (q/k/v biases and per-head q/k norms on)."""
    from hf_models import hf_greedy
    from lora_adapters import save_peft_adapter

    from jaxllm import LLM, SamplingParams
    from jaxllm.lora import LoRARequest

    base = save_tiny_model(tmp_path / "base", "StableLmForCausalLM", **SPECIAL, use_qkv_bias=True,
                           qk_layernorm=True)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    ref = save_peft_adapter(tmp_path / "base", tmp_path / "adapter", r=8, alpha=16, targets=targets, std=0.2)
    llm = LLM(str(tmp_path / "base"), skip_tokenizer_init=True, enable_lora=True, max_lora_rank=8, max_num_seqs=2,
              max_num_batched_tokens=32, enforce_eager=True)
    prompt = list(range(3, 20))
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
                       lora_request=LoRARequest("a", 1, str(tmp_path / "adapter")), use_tqdm=False)
    assert out[0].outputs[0].token_ids == hf_greedy(ref, prompt, 6) != hf_greedy(base, prompt, 6)


def test_gpt2_prompt_embeds_take_learned_positions(tmp_path):
    """GPT-2 prompt embeddings replace the token embeddings before the positions are added (as vLLM's GPT-2):
    the rows of ``wte`` give transformers' greedy tokens for those ids."""
    from hf_models import hf_greedy

    from jaxllm import LLM, SamplingParams

    hf = save_tiny_model(tmp_path, "GPT2LMHeadModel", **SPECIAL, max_position_embeddings=64)
    table = hf.transformer.wte.weight.detach().numpy()
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, enable_prompt_embeds=True, max_num_seqs=2,
              max_num_batched_tokens=32, enforce_eager=True)
    prompt = list(range(5, 22))
    out = llm.generate({"prompt_embeds": table[prompt]}, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
                       use_tqdm=False)
    assert out[0].outputs[0].token_ids == hf_greedy(hf, prompt, 6)
