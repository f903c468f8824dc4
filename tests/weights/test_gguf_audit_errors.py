"""GGUF files jaxllm cannot serve fail at ``LLM(...)`` with an error naming what is wrong, before any weight is
placed: an architecture we do not serve, a missing or unknown tensor (strict loading, named by HF key and llama.cpp
tensor), a tensor type we do not dequantize, stacked experts without an expert count, a file with no tokenizer and
no ``tokenizer=``. A sentencepiece ("llama") tokenizer, which jaxllm does not rebuild itself, comes from
transformers' GGUF converter, as vLLM loads every GGUF tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from gguf_files import finish_gguf, gguf_writer, write_hf_as_gguf
from hf_models import save_tiny_model

from jaxllm import LLM
from jaxllm.weights.gguf import GGUFCheckpoint
from jaxllm.weights.gguf_names import gguf_tensor_name
from jaxllm.weights.loader import WeightLoadError


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(transformers config, {llama.cpp name: float32 array}) of a tiny Mixtral written as llama.cpp does."""
    root = tmp_path_factory.mktemp("src")
    hf = save_tiny_model(root, "MixtralForCausalLM", vocab_size=320, num_local_experts=2, num_experts_per_tok=1,
                         intermediate_size=32)
    write_hf_as_gguf(root / "m.gguf", root, hf.config)
    reader = gguf.GGUFReader(root / "m.gguf")
    return hf.config, {t.name: np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)])
                       for t in reader.tensors}


def rewrite(path, source, arch="llama", drop=(), add=None, experts=True, kv=None):
    """The source file again, as ``arch``, without the tensors ``drop``, plus ``add`` ({name: (raw, type)}) and
    the metadata ``kv`` ({GGUFWriter.add_<key>: value})."""
    cfg, tensors = source
    w = gguf_writer(path, arch, cfg)
    w.add_rope_freq_base(10000.0)
    if experts:
        w.add_expert_count(2)
        w.add_expert_used_count(1)
    for key, value in (kv or {}).items():
        if key == "uint16":  # raw keys: {name: value}
            for name, v in value.items():
                w.add_uint16(name, v)
        else:
            getattr(w, f"add_{key}")(value)
    for name, arr in tensors.items():
        if name not in drop:
            w.add_tensor(name, arr)
    for name, (raw, qtype) in (add or {}).items():
        w.add_tensor(name, raw, raw_dtype=qtype)
    finish_gguf(w)
    return str(path)


def llm(path, **kw):
    return LLM(path, skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True, **kw)


def test_source_file_loads(tmp_path, source):
    """The rewritten file itself is servable: the failures below come from the one change each makes."""
    out = llm(rewrite(tmp_path / "ok.gguf", source)).generate([[1, 2, 3]], use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) > 0


@pytest.mark.parametrize("arch", ["gptj", "mpt", "bloom"])
def test_architecture_not_served_is_named(tmp_path, source, arch):
    with pytest.raises(ValueError, match=rf"GGUF architecture '{arch}' in .* is not supported; supported GGUF "
                                         r"architectures: llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3, olmo2, "
                                         "qwen3moe, qwen2moe, granite, olmoe, smollm3, starcoder2, command-r, gpt2, "
                                         "phi2, stablelm, gptneox, olmo, seed_oss, nemotron, glm4, exaone4, "
                                         "ernie4_5, cohere2, granitemoe, falcon, ernie4_5-moe, dbrx, phimoe, deepseek2$"):
        llm(rewrite(tmp_path / "m.gguf", source, arch=arch))


@pytest.mark.parametrize("drop,hf_key", [("blk.1.ffn_down_exps.weight",
                                          "model.layers.1.block_sparse_moe.experts.0.w2.weight"),
                                         ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"),
                                         ("output_norm.weight", "model.norm.weight")])
def test_missing_tensor_names_hf_key_and_gguf_tensor(tmp_path, source, drop, hf_key):
    with pytest.raises(WeightLoadError, match=rf"missing .*'{hf_key}' \(GGUF '{drop}'\)"):
        llm(rewrite(tmp_path / "m.gguf", source, drop=(drop,)))


def test_unknown_tensor_is_named(tmp_path, source):
    extra = {"blk.0.ffn_gate_shexp.weight": (np.zeros((8, 64), np.float32), gguf.GGMLQuantizationType.F32)}
    with pytest.raises(ValueError, match="GGUF tensor 'blk.0.ffn_gate_shexp.weight' has no HF equivalent"):
        llm(rewrite(tmp_path / "m.gguf", source, add=extra))


def test_tensor_type_not_dequantized_is_named(tmp_path, source):
    qtype = gguf.GGMLQuantizationType.IQ2_XXS
    nbytes = gguf.GGML_QUANT_SIZES[qtype][1]
    extra = {"blk.0.attn_q.bias": (np.zeros((1, nbytes), np.uint8), qtype)}
    with pytest.raises(ValueError, match="GGUF tensor 'blk.0.attn_q.bias' has type IQ2_XXS, which is not "
                                         "supported; supported types: F32, F16, BF16, Q4_0"):
        llm(rewrite(tmp_path / "m.gguf", source, add=extra))


def test_quantization_gguf_is_vllms_name_for_the_files_own_types(tmp_path, source):
    path = rewrite(tmp_path / "m.gguf", source)
    out = llm(path, quantization="gguf").generate([[1, 2, 3]], use_tqdm=False)
    assert out[0].outputs[0].token_ids == llm(path).generate([[1, 2, 3]], use_tqdm=False)[0].outputs[0].token_ids
    save_tiny_model(tmp_path / "hf", "LlamaForCausalLM")
    with pytest.raises(ValueError, match="quantization='gguf' but .* is not a GGUF file"):
        llm(str(tmp_path / "hf"), quantization="gguf")


def test_split_gguf_shard_is_named(tmp_path, source):
    """vLLM loads single-file GGUF only; a gguf-split shard says so instead of missing half its tensors."""
    path = rewrite(tmp_path / "m-00001-of-00003.gguf", source, kv={"uint16": {"split.no": 0, "split.count": 3}})
    with pytest.raises(ValueError, match=r"is shard 1 of 3 of a split GGUF; only single-file GGUF models load"):
        llm(path)


def test_stacked_experts_without_expert_count(tmp_path, source):
    with pytest.raises(ValueError, match="'blk.0.ffn_gate_exps.weight' .* stacks MoE experts but the file has no "
                                         "llama.expert_count"):
        llm(rewrite(tmp_path / "m.gguf", source, experts=False))


def test_qwen3moe_router_metadata(tmp_path, source):
    """Top-k renormalization as llama.cpp's qwen3moe graph does it (always, unless expert_weights_norm says no);
    a gating function other than softmax is named."""
    ffn = {"expert_feed_forward_length": 32}
    hf = GGUFCheckpoint(rewrite(tmp_path / "a.gguf", source, arch="qwen3moe", kv=ffn)).hf_config
    assert hf["architectures"] == ["Qwen3MoeForCausalLM"] and hf["norm_topk_prob"] is True
    assert hf["num_experts"] == 2 and hf["moe_intermediate_size"] == 32 and hf["mlp_only_layers"] == []
    off = {**ffn, "expert_weights_norm": False}
    assert GGUFCheckpoint(rewrite(tmp_path / "b.gguf", source, arch="qwen3moe", kv=off)
                          ).hf_config["norm_topk_prob"] is False
    with pytest.raises(ValueError, match="GGUF llama.expert_gating_func=2 is not supported; supported: 1"):
        llm(rewrite(tmp_path / "c.gguf", source, kv={"expert_gating_func": gguf.ExpertGatingFuncType.SIGMOID}))


def test_no_tokenizer_anywhere_is_clear(tmp_path, source):
    path = rewrite(tmp_path / "m.gguf", source)
    with pytest.raises(ValueError, match=r"carries no tokenizer .*pass tokenizer=<HF folder or hub id"):
        LLM(path, max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True)


def test_sentencepiece_tokenizer_comes_from_transformers(tmp_path, source):
    """A llama-2 style (sentencepiece) vocabulary without ``tokenizer=``: transformers converts it, as in vLLM."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += ["▁", "▁t", "he", "▁the", "▁a", "an", "▁an", "d", "▁and", "h", "e", "t", "a", "n"]
    tokens += [f"x{i}" for i in range(320 - len(tokens))]
    spm = {"tokenizer_model": "llama", "token_list": tokens, "token_types": [2, 3, 3] + [6] * 256 + [1] * 61,
           "token_scores": [0.0] * 259 + [-float(i) for i in range(61)], "bos_token_id": 1, "eos_token_id": 2,
           "unk_token_id": 0, "add_bos_token": True}
    path = rewrite(tmp_path / "m.gguf", source, kv=spm)
    engine = LLM(path, max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    tok = engine.get_tokenizer()
    for text in ["the and a", "héllo the"]:
        assert tok.encode(text) == ref.encode(text)
    assert tok.encode("the and a") == [1, 262, 267, 263]  # <s> ▁the ▁and ▁a
    out = engine.generate(["the and"], use_tqdm=False)[0]
    assert out.prompt_token_ids == [1, 262, 267]


def test_gguf_tensor_name_inverts_the_table():
    assert gguf_tensor_name("model.layers.3.mlp.experts.5.down_proj.weight", "qwen3moe") == "blk.3.ffn_down_exps.weight"
    assert gguf_tensor_name("model.layers.2.pre_feedforward_layernorm.weight", "gemma2") == "blk.2.ffn_norm.weight"
    assert gguf_tensor_name("lm_head.weight", "llama") == "output.weight"
    assert gguf_tensor_name("model.layers.0.self_attn.rotary.weight", "llama") is None
