"""GGUF reading on tiny files written in the test (no downloads).

A tiny random HF model (llama / qwen2 / qwen3) is written to GGUF the way llama.cpp's converter does it
(llama.cpp tensor names, q/k rows permuted for llama, a byte-level BPE vocabulary in the metadata). Reading it
back with ``GGUFCheckpoint`` must give the HF config and the HF tensors exactly; transformers' own GGUF loader
is the independent reference for the permutation convention and for the tokenizer.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import finish_gguf, gguf_writer

from jaxllm.config import ModelConfig
from jaxllm.weights.gguf import (
    SUPPORTED_TENSOR_TYPES,
    GGUFCheckpoint,
    hf_tensor_name,
    is_gguf,
    permute_qk,
    unpermute_qk,
)
from jaxllm.weights.gguf_rope import llama3_scaling_from_freqs

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "1 2", "e r", "Ġa n", "Ġan d"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_INV = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}
_LAYER_INV = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def tiny_vocab() -> tuple[list[str], list[int]]:
    """Specials + GPT-2's 256-symbol byte alphabet + one token per merge."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = SPECIALS + sorted(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]
    return tokens, [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))


def gguf_name(hf: str) -> str:
    parts = hf.split(".")
    if parts[0] == "lm_head":
        return "output." + parts[-1]
    if parts[1] in ("embed_tokens", "norm"):
        return f"{_INV[parts[1]]}.{parts[-1]}"
    return f"blk.{parts[2]}.{_LAYER_INV['.'.join(parts[3:-1])]}.{parts[-1]}"


def write_gguf(path, model, arch: str, pre: str, quantize: dict[str, str] | None = None, **extra_kv):
    """Write ``model`` (a transformers causal LM) as llama.cpp would; ``quantize`` maps HF names to a type."""
    cfg = model.config
    tokens, types = tiny_vocab()
    w = gguf_writer(path, arch, cfg)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if arch == "qwen3":
        w.add_key_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or cfg.rope_theta
    w.add_rope_freq_base(theta)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for key, value in extra_kv.items():
        getattr(w, f"add_{key}")(value)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        arr = t.detach().float().numpy()
        if arch == "llama" and ".q_proj." in name:
            arr = permute_qk(arr, cfg.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            arr = permute_qk(arr, cfg.num_key_value_heads)
        qtype = (quantize or {}).get(name)
        if qtype is None:
            w.add_tensor(gguf_name(name), arr)
        else:
            q = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gguf_name(name), gguf.quants.quantize(arr, q), raw_dtype=q)
    finish_gguf(w)
    return path


def transformers_gguf_tensors(path, model) -> dict[str, np.ndarray]:
    """transformers' own GGUF reader (dequantize + reverse permutation) as float32 numpy, keyed by HF name.

    ``model`` only supplies the HF parameter names (it may live on the meta device)."""
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    parsed = gguf_utils.load_gguf_checkpoint(os.fspath(path), return_tensors=True, model_to_load=model)
    return {k: v.float().numpy() for k, v in parsed["tensors"].items()}


def tiny_model(arch: str, tie: bool):
    torch.manual_seed(0)
    common = {"vocab_size": len(tiny_vocab()[0]), "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": tie,
              "bos_token_id": 1, "eos_token_id": 2}
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common, head_dim=16)
        return transformers.LlamaForCausalLM(cfg).eval()
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    cfg = transformers.Qwen3Config(**common, head_dim=32)
    return transformers.Qwen3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch,tie", [("llama", True), ("llama", False), ("qwen2", False), ("qwen3", True)])
def test_round_trip_f32(tmp_path, arch, tie):
    model = tiny_model(arch, tie)
    path = write_gguf(tmp_path / "m.gguf", model, arch, pre="smollm" if arch == "llama" else "qwen2")
    assert is_gguf(path) and not is_gguf(tmp_path) and not is_gguf(tmp_path / "missing.gguf")
    ckpt = GGUFCheckpoint(path)
    hf = ckpt.hf_config
    assert hf["architectures"] == [type(model).__name__] and hf["model_type"] == arch
    assert hf["tie_word_embeddings"] is tie
    mc, ref = ModelConfig.from_hf(hf, "float32"), ModelConfig.from_hf(model.config.to_dict(), "float32")
    assert dataclasses_equal(mc, ref)
    expected = {k: v.float().numpy() for k, v in model.state_dict().items()
                if not (tie and k == "lm_head.weight")}
    got = dict(ckpt.tensors())
    assert sorted(got) == sorted(expected) == sorted(ckpt.tensor_names())
    for name, value in expected.items():
        assert got[name].dtype == np.float32 and got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def dataclasses_equal(a, b) -> bool:
    """ModelConfig equality up to the fields a GGUF cannot carry (none for these models)."""
    da, db = a.__dict__, b.__dict__
    diff = {k: (da[k], db[k]) for k in da if da[k] != db[k]}
    assert not diff, diff
    return True


def test_unpermute_inverts_permute():
    w = np.random.default_rng(0).standard_normal((3 * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 3), 3), w)
    assert not np.array_equal(permute_qk(w, 3), w)
    b = np.arange(24, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_qk(permute_qk(b, 3), 3), b)
    # llama.cpp pairs dimension j with j + Dh/2 inside each head: rows (0, 4, 1, 5, 2, 6, 3, 7) for Dh = 8.
    np.testing.assert_array_equal(permute_qk(np.arange(8.0), 1), [0, 4, 1, 5, 2, 6, 3, 7])


def test_llama_matches_transformers_gguf_loader(tmp_path):
    """transformers' own GGUF loader undoes the permutation independently: same tensors, same logits."""
    model = tiny_model("llama", tie=False)
    write_gguf(tmp_path / "m.gguf", model, "llama", pre="smollm",
               quantize={"model.layers.0.self_attn.q_proj.weight": "Q8_0",
                         "model.layers.1.mlp.up_proj.weight": "Q4_1"})
    ref = transformers_gguf_tensors(tmp_path / "m.gguf", model)
    ours = dict(GGUFCheckpoint(tmp_path / "m.gguf").tensors())
    assert sorted(ref) == sorted(ours)
    for name, value in ref.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    # The quantized tensors really were quantized (and are close to the originals).
    orig = model.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert not np.array_equal(ours["model.layers.0.self_attn.q_proj.weight"], orig)
    np.testing.assert_allclose(ours["model.layers.0.self_attn.q_proj.weight"], orig, atol=2e-3)


@pytest.mark.parametrize("arch,pre", [("llama", "smollm"), ("qwen2", "qwen2"), ("llama", "llama-bpe")])
def test_tokenizer_matches_transformers(tmp_path, arch, pre):
    write_gguf(tmp_path / "m.gguf", tiny_model(arch, True), arch, pre=pre)
    ours = GGUFCheckpoint(tmp_path / "m.gguf").tokenizer()
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    texts = ["the then and 12 123 4567", " and the", "héllo, wörld! 日本 🤗", "a\n\n b\tc  ",
             "<|im_start|>user\nthe<|im_end|>"]
    for text in texts:
        if pre == "smollm":  # transformers has no "smollm" split; tiny vocab has no multi-digit tokens anyway
            text = text.replace("12", "1 2")
        assert ours.encode(text) == ref.encode(text), text
        assert ours.decode(ours.encode(text)) == text
    # Digits are never merged: "12" would be one token if the split allowed it (the merge "1 2" exists).
    digit_ids = ours.encode("12")
    if pre in ("smollm", "qwen2"):
        assert len(digit_ids) == 2
    else:  # llama3 groups up to three digits
        assert len(digit_ids) == 1
    msgs = [{"role": "user", "content": "the 12"}]
    assert (ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    assert ours.eos_token == "<|im_end|>" and ours.bos_token == "<|im_start|>" and ours.pad_token == "<|endoftext|>"
    assert ours.decode(ours.encode("<|im_end|>the"), skip_special_tokens=True) == "the"


def test_unsupported_architecture_and_types(tmp_path):
    model = tiny_model("llama", True)
    p = tmp_path / "m.gguf"
    write_gguf(p, model, "llama", pre="smollm")
    data = p.read_bytes()
    (tmp_path / "bad_arch.gguf").write_bytes(data.replace(b"llama", b"bloom"))
    with pytest.raises(ValueError, match="architecture 'bloom'.*supported GGUF architectures: llama, qwen2"):
        GGUFCheckpoint(tmp_path / "bad_arch.gguf")
    (tmp_path / "x.gguf").write_bytes(b"NOPE")
    with pytest.raises(ValueError, match="not a GGUF file"):
        GGUFCheckpoint(tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="blk.0.ffn_gate_exps.weight"):
        hf_tensor_name("blk.0.ffn_gate_exps.weight")
    from jaxllm.weights.gguf import dequantize

    with pytest.raises(ValueError, match="IQ2_XXS is not supported; supported types: F32"):
        dequantize(np.zeros(66, np.uint8), "IQ2_XXS", (1, 256))
    assert "Q4_1" in SUPPORTED_TENSOR_TYPES and "Q8_0" in SUPPORTED_TENSOR_TYPES


def test_unsupported_tokenizer_pre(tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_model("llama", True), "llama", pre="mystery-pre")
    ckpt = GGUFCheckpoint(tmp_path / "m.gguf")  # weights still load
    with pytest.raises(ValueError, match="tokenizer.ggml.pre='mystery-pre' is not supported.*; pass tokenizer="):
        ckpt.tokenizer()


def test_rope_scaling(tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_model("llama", True), "llama", pre="smollm",
               rope_scaling_type=gguf.RopeScalingType.LINEAR, rope_scaling_factor=2.0)
    hf = GGUFCheckpoint(tmp_path / "m.gguf").hf_config
    assert hf["rope_scaling"] == {"rope_type": "linear", "factor": 2.0}
    assert ModelConfig.from_hf(hf).rope.rope_type == "linear"
    # llama3 scaling arrives as a rope_freqs tensor; rebuild it with Llama-3.2's parameters and recover them.
    theta, dim, factor = 500000.0, 64, 32.0
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    wl = 2 * np.pi / inv
    smooth = (8192 / wl - 1.0) / (4.0 - 1.0)
    freqs = np.where(wl < 2048, 1.0, np.where(wl > 8192, factor, 1 / ((1 - smooth) / factor + smooth)))
    got = llama3_scaling_from_freqs(freqs.astype(np.float32), theta, dim)
    assert got == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
    with pytest.raises(ValueError, match="rope_freqs"):
        llama3_scaling_from_freqs(np.linspace(1, 3, dim // 2, dtype=np.float32), theta, dim)


def test_hf_config_is_json(tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_model("qwen2", False), "qwen2", pre="qwen2")
    hf = GGUFCheckpoint(tmp_path / "m.gguf").hf_config
    assert json.loads(json.dumps(hf)) == hf
    assert hf["torch_dtype"] == "float32" and hf["bos_token_id"] == 1 and hf["eos_token_id"] == 2


def test_end_of_turn_token_joins_eos(tmp_path):
    """Instruct GGUFs whose eos is <|endoftext|> name <|im_end|> as end-of-turn: generation must stop at both."""
    write_gguf(tmp_path / "m.gguf", tiny_model("qwen2", False), "qwen2", pre="qwen2", eot_token_id=0)
    ckpt = GGUFCheckpoint(tmp_path / "m.gguf")
    assert ckpt.hf_config["eos_token_id"] == [2, 0] and ckpt.generation_eos_ids == (0, 2)
    assert ModelConfig.from_hf(ckpt.hf_config).eos_token_ids == (2, 0)


def test_reader_matches_gguf_package(tmp_path):
    """Our fast container reader sees the same metadata and tensor bytes as gguf.GGUFReader."""
    from jaxllm.weights.gguf_reader import GGUFFile

    model = tiny_model("llama", False)
    path = write_gguf(tmp_path / "m.gguf", model, "llama", pre="smollm",
                      quantize={"model.layers.1.mlp.up_proj.weight": "Q4_1"})
    ours, ref = GGUFFile(str(path)), gguf.GGUFReader(path)
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        assert ours.metadata[key] == (pytest.approx(expected) if isinstance(expected, float) else expected), key
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        np.testing.assert_array_equal(ours.tensors[t.name].data.reshape(-1).view(np.uint8),
                                      np.asarray(t.data).reshape(-1).view(np.uint8), err_msg=t.name)


# Byte offsets of the fp16 scale/min fields inside one block, per type (ggml's block_* structs).
_HALF_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q8_0": (0,), "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2),
                "Q5_K": (0, 2), "Q6_K": (208,)}


@pytest.mark.parametrize("type_name", sorted(_HALF_FIELDS))
def test_dequantize_matches_transformers_torch_kernels(type_name):
    """Random blocks (with finite fp16 scales) decode like transformers' independent torch dequantizer."""
    ref = pytest.importorskip("transformers.integrations.gguf.dequant")
    from jaxllm.weights.gguf import dequantize

    qtype = gguf.GGMLQuantizationType[type_name]
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = 3, 2 * 256
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (rows * cols // block, nbytes), dtype=np.uint8)
    for off in _HALF_FIELDS[type_name]:
        raw[:, off:off + 2] = rng.uniform(-0.05, 0.05, (len(raw), 1)).astype(np.float16).view(np.uint8)
    ours = dequantize(raw.reshape(rows, -1), type_name, (rows, cols))
    expected = ref.dequantize(torch.from_numpy(raw.reshape(-1)), int(qtype)).numpy().reshape(rows, cols)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("type_name", ["F16", "BF16", "Q4_0", "Q5_0", "Q5_1"])
def test_dequantize_round_trips_gguf_quantize(type_name):
    """Types without a second reference: quantize with gguf, dequantize with us, compare to the input."""
    from jaxllm.weights.gguf import dequantize

    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name])
    y = dequantize(q, type_name, x.shape)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol={"F16": 2e-3, "BF16": 2e-2}.get(type_name, 0.35))
