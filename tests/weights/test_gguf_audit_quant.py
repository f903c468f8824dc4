"""Quantized GGUF files (every tensor type jaxllm dequantizes) load to the model their dequantized values define.

Each 2-D weight of a tiny HF checkpoint (rows of 256, one K-quant super-block) is encoded as one type - by the
gguf package's quantizer, or random blocks for the K types it cannot encode - and written to GGUF as llama.cpp's
converter does (q/k rows of the raw blocks permuted, MoE experts stacked). The reference is transformers on an HF
checkpoint of gguf's own dequantized values (tests/gguf_files.encode_checkpoint): logits within 1e-4 relative and
identical greedy tokens through ``LLM(model=file.gguf, tokenizer=HF_DIR)``; transformers' GGUF reader is a second
reference for the llama files."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import encode_checkpoint, write_hf_as_gguf
from hf_models import hf_greedy, hf_logits, relative_error, save_tiny_model, save_tokenizer_with_template

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.weights.gguf import SUPPORTED_TENSOR_TYPES, GGUFCheckpoint

WIDE = {"vocab_size": 512, "hidden_size": 256, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64}
TYPES = [t for t in SUPPORTED_TENSOR_TYPES if t != "F32"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_tiny_model(path, "LlamaForCausalLM", **WIDE)
    save_tokenizer_with_template(path)
    return path


def quantized(hf_dir, root, type_name: str):
    """(GGUF path, transformers model of the dequantized reference checkpoint) for ``type_name``."""
    cfg = transformers.AutoConfig.from_pretrained(hf_dir)
    encoded = encode_checkpoint(hf_dir, root / "ref", type_name)
    write_hf_as_gguf(root / "m.gguf", hf_dir, cfg, encoded)
    ref = transformers.AutoModelForCausalLM.from_pretrained(root / "ref", dtype=torch.float32).eval()
    return root / "m.gguf", ref


@pytest.mark.parametrize("type_name", TYPES)
def test_llama_logits_match_dequantized_reference(llama_dir, tmp_path, type_name):
    path, ref = quantized(llama_dir, tmp_path, type_name)
    types = {t.type_name for t in GGUFCheckpoint(path).file.tensors.values()}
    assert types == {type_name, "F32"}  # the weights really are stored as type_name (norms stay F32)
    ids = np.random.RandomState(1).randint(0, 512, (2, 12)).astype(np.int32)
    ours = np.asarray(jaxllm.load_model(path)(ids))
    assert relative_error(ours, hf_logits(ref, ids)) <= 1e-4
    # transformers reads the same file itself (its own name map, dequantizer and q/k un-permutation)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "m.gguf").symlink_to(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", gguf_file="m.gguf",
                                                               dtype=torch.float32).eval()
    assert relative_error(ours, hf_logits(theirs, ids)) <= 1e-4


MOE = {"num_local_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True}


def moe_checkpoint(path, arch: str):
    extra = {"moe_intermediate_size": 256} if arch == "Qwen3MoeForCausalLM" else {}
    save_tiny_model(path, arch, **WIDE, **MOE, **extra)
    save_tokenizer_with_template(path)
    return path


def test_mixtral_quantized_experts_logits(tmp_path):
    """Stacked Q4_K experts (gate / up [E, F, D], down [E, D, F]) split per expert at load."""
    path, ref = quantized(moe_checkpoint(tmp_path / "hf", "MixtralForCausalLM"), tmp_path, "Q4_K")
    ids = np.random.RandomState(4).randint(0, 512, (2, 12)).astype(np.int32)
    assert relative_error(np.asarray(jaxllm.load_model(path)(ids)), hf_logits(ref, ids)) <= 1e-4


def test_generate_quantized_moe_matches_transformers(tmp_path):
    """``LLM(model=q.gguf, tokenizer=HF_DIR)`` on Q6_K Qwen3-MoE: greedy tokens of the dequantized reference."""
    hf_dir = moe_checkpoint(tmp_path / "hf", "Qwen3MoeForCausalLM")
    path, ref = quantized(hf_dir, tmp_path, "Q6_K")
    llm = LLM(str(path), tokenizer=str(hf_dir), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)
    prompts = ["Hello world, the quick brown fox", "STOP here; stop there."]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    for out in outs:
        assert list(out.outputs[0].token_ids) == hf_greedy(ref, out.prompt_token_ids, 6)


@pytest.mark.parametrize("quantization", ["int8", "fp8"])
def test_weight_only_quantization_of_a_gguf(llama_dir, tmp_path, quantization):
    """A GGUF's dequantized weights re-quantized at load (weight-only int8 / fp8): close to the file's logits, and
    really quantized (not equal)."""
    path, ref = quantized(llama_dir, tmp_path, "Q8_0")
    ids = np.random.RandomState(5).randint(0, 512, (2, 12)).astype(np.int32)
    err = relative_error(np.asarray(jaxllm.load_model(path, quantization=quantization)(ids)), hf_logits(ref, ids))
    assert 1e-5 < err <= 0.1
