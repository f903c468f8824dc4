"""gpt-oss's MXFP4 checkpoints (``*_blocks`` uint8 + ``*_scales`` e8m0 experts, quant_method "mxfp4"):
the numpy dequantizer against transformers' own, and a tiny MXFP4 checkpoint loading to the same logits as the
dequantized float checkpoint (which transformers runs too)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from gpt_oss_cases import save_gpt_oss
from safetensors.numpy import load_file, save_file
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

import jaxllm
from jaxllm.weights.mxfp4 import dequantize_mxfp4


def _random_mxfp4(rng, e, n, k):
    blocks = rng.randint(0, 256, (e, n, k // 32, 16)).astype(np.uint8)
    scales = rng.randint(122, 130, (e, n, k // 32)).astype(np.uint8)  # 2^-5 .. 2^2
    return blocks, scales


def test_dequantize_matches_transformers():
    blocks, scales = _random_mxfp4(np.random.RandomState(0), 3, 10, 64)
    want = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    got = dequantize_mxfp4(blocks, scales)
    assert got.shape == (3, 64, 10)
    np.testing.assert_array_equal(got, want.numpy())


def test_dequantize_rejects_bad_shapes():
    blocks, scales = _random_mxfp4(np.random.RandomState(0), 2, 4, 32)
    with pytest.raises(ValueError, match="mxfp4 blocks"):
        dequantize_mxfp4(blocks[..., :8], scales)
    with pytest.raises(ValueError, match="uint8"):
        dequantize_mxfp4(blocks.astype(np.int32), scales)


def _checkpoints(tmp_path):
    """(mxfp4 dir, dequantized float dir) of one tiny gpt-oss whose experts are random MXFP4 values."""
    base = tmp_path / "base"
    save_gpt_oss(base)
    tensors = load_file(base / "model.safetensors")
    hf = json.loads((base / "config.json").read_text())
    rng = np.random.RandomState(5)
    packed, plain = {}, {}
    for name, array in tensors.items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, k, n = array.shape
            blocks, scales = _random_mxfp4(rng, e, n, k)
            scales -= 2 if "gate" in name else 5  # magnitudes like the float checkpoint's (gate_up ~ 0.6)
            packed[name + "_blocks"], packed[name + "_scales"] = blocks, scales
            plain[name] = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                                     dtype=torch.float32).numpy()
        else:
            packed[name] = plain[name] = array
    dirs = []
    for sub, weights, extra in (("mxfp4", packed, {"quantization_config": {"quant_method": "mxfp4"}}),
                                ("plain", plain, {})):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text(json.dumps({**hf, **extra}))
        save_file(weights, tmp_path / sub / "model.safetensors")
        dirs.append(tmp_path / sub)
    return dirs


def test_mxfp4_checkpoint_loads_like_its_dequantized_weights(tmp_path):
    mxfp4, plain = _checkpoints(tmp_path)
    ids = np.random.RandomState(1).randint(0, 256, (2, 20)).astype(np.int32)
    model = jaxllm.load_model(mxfp4)
    assert model.config.mxfp4_experts and model.config.quantization is None
    ours = np.asarray(model(ids))
    np.testing.assert_array_equal(ours, np.asarray(jaxllm.load_model(plain)(ids)))
    hf = transformers.GptOssForCausalLM.from_pretrained(plain, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4


def test_mxfp4_half_without_its_pair_is_named(tmp_path):
    mxfp4, _ = _checkpoints(tmp_path)
    tensors = load_file(mxfp4 / "model.safetensors")
    key = "model.layers.1.mlp.experts.down_proj_scales"
    shutil.move(mxfp4 / "model.safetensors", tmp_path / "full.safetensors")
    save_file({k: v for k, v in tensors.items() if k != key}, mxfp4 / "model.safetensors")
    with pytest.raises(ValueError, match="down_proj_blocks.* has no .*down_proj_scales"):
        jaxllm.load_model(mxfp4)


def test_quantization_mxfp4_keyword(tmp_path):
    """LLM(quantization="mxfp4") as vLLM takes it: the MXFP4 checkpoint's own format; without one, a ValueError."""
    mxfp4, plain = _checkpoints(tmp_path)
    llm = jaxllm.LLM(str(mxfp4), quantization="mxfp4", skip_tokenizer_init=True, max_model_len=64,
                     max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)
    out = llm.generate([{"prompt_token_ids": [5, 6, 7]}], jaxllm.SamplingParams(temperature=0.0, max_tokens=3),
                       use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 3
    with pytest.raises(ValueError, match="quantization='mxfp4' needs an MXFP4 checkpoint"):
        jaxllm.load_model(plain, quantization="mxfp4")
