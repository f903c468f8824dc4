"""GGUF files of the families whose HF checkpoints have their own tensor names (GPT-2, Phi-2, StableLM, GPT-NeoX,
OLMo, Seed-OSS, Nemotron), written as llama.cpp's convert_hf_to_gguf.py writes them (tests/gguf_files.py: the
gguf package's name map, GPT-2's transposed Conv1D, GPT-NeoX's [q | k | v] rows, StableLM's stacked per-head
norms, OLMo's q/k permutation, Nemotron's norms + 1): the file gives transformers' fp32 logits on the HF
checkpoint (1e-4 relative) and its greedy token at every position; a file lacking a tensor fails naming it."""

from __future__ import annotations

import math

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_hf_as_gguf
from gguf_files_archs import assert_generate_matches, assert_gguf_matches, copy_gguf, write_own_names_as_gguf
from hf_models import hf_logits, relative_error, save_tiny_model, save_tokenizer_with_template

import jaxllm
from jaxllm.weights.gguf import GGUFCheckpoint

SPECIAL = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
CASES = {
    "gpt2": ("GPT2LMHeadModel", {}),
    "phi2": ("PhiForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.5, "intermediate_size": 96}),
    "stablelm": ("StableLmForCausalLM", {**SPECIAL, "use_qkv_bias": True, "qk_layernorm": True}),
    "stablelm-parallel": ("StableLmForCausalLM", {**SPECIAL, "use_parallel_residual": True}),
    "gptneox": ("GPTNeoXForCausalLM", {**SPECIAL, "rotary_pct": 0.5}),
    "gptneox-sequential": ("GPTNeoXForCausalLM", {**SPECIAL, "use_parallel_residual": False}),
    "olmo": ("OlmoForCausalLM", {**SPECIAL, "clip_qkv": 0.5, "attention_bias": True}),
    "seed-oss": ("SeedOssForCausalLM", {**SPECIAL, "head_dim": 16, "attention_out_bias": True}),
    "nemotron": ("NemotronForCausalLM", {**SPECIAL, "head_dim": 16, "partial_rotary_factor": 0.5}),
    "glm4": ("Glm4ForCausalLM", {**SPECIAL, "partial_rotary_factor": 0.5}),
    "exaone4": ("Exaone4ForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "sliding_window": 6,
                                       "sliding_window_pattern": 4}),
    "ernie4_5": ("Ernie4_5ForCausalLM", {**SPECIAL, "use_bias": True, "tie_word_embeddings": False}),
    "granitemoe": ("GraniteMoeForCausalLM", {**SPECIAL, "num_local_experts": 4, "num_experts_per_tok": 2,
                                             "embedding_multiplier": 3.0, "residual_multiplier": 0.5,
                                             "attention_multiplier": 0.2, "logits_scaling": 4.0}),
    "granitemoeshared": ("GraniteMoeSharedForCausalLM", {**SPECIAL, "num_local_experts": 4, "num_experts_per_tok": 2,
                                                         "shared_intermediate_size": 48}),
    "falcon-7b": ("FalconForCausalLM", {**SPECIAL, "max_position_embeddings": 2048}),
    "falcon-new-gqa": ("FalconForCausalLM", {**SPECIAL, "new_decoder_architecture": True, "num_kv_heads": 2,
                                             "max_position_embeddings": 2048}),
    "falcon-bias": ("FalconForCausalLM", {**SPECIAL, "bias": True, "max_position_embeddings": 2048}),
    "falcon-new-one-norm": ("FalconForCausalLM", {**SPECIAL, "new_decoder_architecture": True, "num_kv_heads": 2,
                                                  "num_ln_in_parallel_attn": 1, "max_position_embeddings": 2048}),
    "falcon-per-head": ("FalconForCausalLM", {**SPECIAL, "multi_query": False, "max_position_embeddings": 2048}),
    "ernie4_5-moe": ("Ernie4_5_MoeForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "intermediate_size": 96,
                                                "moe_intermediate_size": 16, "moe_k": 2, "moe_num_experts": 8,
                                                "moe_num_shared_experts": 2, "moe_layer_start_index": 1,
                                                "moe_layer_interval": 2, "tie_word_embeddings": False}),
    "cohere2": ("Cohere2ForCausalLM", {**SPECIAL, "num_hidden_layers": 4, "sliding_window": 6,
                                       "logit_scale": 0.25}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_greedy_match_transformers(name, tmp_path):
    arch, overrides = CASES[name]
    hf = save_tiny_model(tmp_path / "hf", arch, **overrides)
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    assert_gguf_matches(tmp_path / "m.gguf", hf, arch)


def test_missing_tensor_names_the_gguf_tensor(tmp_path):
    """A GPT-NeoX file without one layer's fused qkv: an error naming the HF key and the llama.cpp tensor."""
    hf = save_tiny_model(tmp_path / "hf", "GPTNeoXForCausalLM", **SPECIAL)
    write_own_names_as_gguf(tmp_path / "full.gguf", tmp_path / "hf", hf.config)
    copy_gguf(tmp_path / "full.gguf", tmp_path / "missing.gguf", drop=("blk.1.attn_qkv.weight",))
    with pytest.raises(Exception, match=r"gpt_neox\.layers\.1\.attention\.query_key_value\.weight.*"
                                        r"blk\.1\.attn_qkv\.weight"):
        jaxllm.load_model(tmp_path / "missing.gguf")


def test_unknown_tensor_is_an_error_naming_it(tmp_path):
    hf = save_tiny_model(tmp_path / "hf", "GPT2LMHeadModel")
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    copy_gguf(tmp_path / "m.gguf", tmp_path / "extra.gguf", extra={"blk.0.attn_q_norm.weight": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q_norm\.weight.*gpt2"):
        GGUFCheckpoint(tmp_path / "extra.gguf")


@pytest.mark.parametrize("top_k", [2, 3])
def test_dbrx(tmp_path, top_k):
    """DBRX's experts [E * F, D] are written [E, F, D] (w2 transposed [E, D, F]); the nested config comes back."""
    cfg = transformers.DbrxConfig(d_model=64, n_heads=4, n_layers=2, max_seq_len=512, vocab_size=256,
                                  attn_config={"kv_n_heads": 2, "clip_qkv": 0.4, "rope_theta": 10000.0},
                                  ffn_config={"ffn_hidden_size": 32, "moe_num_experts": 8, "moe_top_k": top_k})
    cfg.architectures = ["DbrxForCausalLM"]
    torch.manual_seed(0)
    hf = transformers.DbrxForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm_" in name and p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("router.layer.weight"):
                p.copy_(torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "m.gguf"
    write_own_names_as_gguf(path, tmp_path / "hf", hf.config)
    ids = np.random.RandomState(1).randint(0, 256, (2, 20)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(path)(ids)), hf_logits(hf, ids)) <= 1e-4


def test_phimoe(tmp_path):
    """Phi-3.5-MoE: longrope factors as tensors, the one attention factor the converter stores as both mscales
    (the HF model here uses that value), experts stacked, biases and lm_head bias."""
    orig, max_pos = 256, 512
    mscale = math.sqrt(1 + math.log(max_pos / orig) / math.log(orig))
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [2.0 + 0.1 * i for i in range(8)], "short_mscale": mscale, "long_mscale": mscale,
            "original_max_position_embeddings": orig}
    hf = save_tiny_model(tmp_path / "hf", "PhimoeForCausalLM", **SPECIAL, num_local_experts=8,
                         max_position_embeddings=max_pos, attention_bias=True, lm_head_bias=True,
                         rope_parameters=rope, router_jitter_noise=0.01)
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    assert_gguf_matches(tmp_path / "m.gguf", hf, "PhimoeForCausalLM")


@pytest.mark.parametrize("name", ["gpt2", "gptneox", "falcon-new-gqa"])
def test_q8_0_files_dequantize_before_the_edits_are_undone(name, tmp_path):
    """Q8_0 blocks run along the converter's layout (transposed, regrouped rows): the loader dequantizes first,
    so the logits stay within Q8_0's rounding of transformers' (a layout error would be ~100% off)."""
    arch, overrides = CASES[name]
    hf = save_tiny_model(tmp_path / "hf", arch, **overrides)
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config, qtype="Q8_0")
    assert "Q8_0" in {t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 20)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(tmp_path / "m.gguf")(ids)), hf_logits(hf, ids)) <= 2e-2


def test_olmo3_converts_to_olmo2_with_a_window(tmp_path):
    """llama.cpp's converter writes OLMo 3 as olmo2 plus a sliding window and its per-layer pattern."""
    hf = save_tiny_model(tmp_path / "hf", "Olmo3ForCausalLM", **SPECIAL, num_hidden_layers=4, sliding_window=6)
    path = tmp_path / "m.gguf"
    assert write_hf_as_gguf(path, tmp_path / "hf", hf.config) == "olmo2"
    cfg = GGUFCheckpoint(path).hf_config
    assert cfg["architectures"] == ["Olmo3ForCausalLM"] and cfg["layer_types"] == hf.config.layer_types
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 20)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(path)(ids)), hf_logits(hf, ids)) <= 1e-4


@pytest.mark.parametrize("name", ["gpt2", "falcon-new-gqa"])
def test_generate_with_hf_tokenizer_matches_transformers(name, tmp_path):
    """vLLM's way of serving a GGUF: ``LLM(file.gguf, tokenizer=HF_DIR)``, greedy tokens as transformers'."""
    arch, overrides = CASES[name]
    hf = save_tiny_model(tmp_path / "hf", arch, vocab_size=512, **overrides)
    save_tokenizer_with_template(tmp_path / "hf")
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    assert_generate_matches(tmp_path / "m.gguf", tmp_path / "hf", hf)


def test_stack_larger_than_its_metadata_count_is_an_error(tmp_path):
    """A StableLM q-norm stack of 4 heads in a file that says 2 would drop heads silently: refused, named."""
    hf = save_tiny_model(tmp_path / "hf", "StableLmForCausalLM", **SPECIAL, qk_layernorm=True)
    write_own_names_as_gguf(tmp_path / "m.gguf", tmp_path / "hf", hf.config)
    norm = np.ones((4, 16), np.float32)
    copy_gguf(tmp_path / "m.gguf", tmp_path / "bad.gguf", drop=("blk.0.attn_k_norm.weight",),
              extra={"blk.0.attn_k_norm.weight": norm})
    with pytest.raises(ValueError, match=r"blk\.0\.attn_k_norm\.weight.*holds 4 HF tensors.*says 2"):
        jaxllm.load_model(tmp_path / "bad.gguf")
