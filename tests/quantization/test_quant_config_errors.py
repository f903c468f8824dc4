"""Unsupported quantized checkpoints and mismatches are ValueErrors that name the problem and list what works."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hf_models import make_config
from int4_checkpoints import int4_checkpoint
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm.config import ModelConfig


def hf_dict(qcfg):
    d = make_config("LlamaForCausalLM").to_dict()
    d["quantization_config"] = qcfg
    return d


AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}


@pytest.mark.parametrize("qcfg,match", [
    ({**AWQ, "bits": 8}, "awq with bits=8 \\(only bits=4\\)"),
    ({**GPTQ, "bits": 3}, "gptq with bits=3 \\(only bits=4\\)"),
    ({**GPTQ, "group_size": 16}, "gptq with group_size=16"),
    ({**AWQ, "group_size": -1}, "awq with group_size=-1"),
    ({**AWQ, "version": "gemv"}, "awq version='gemv' \\(only 'gemm'\\)"),
    ({**AWQ, "version": "marlin"}, "awq version='marlin'"),
    ({**GPTQ, "checkpoint_format": "gptq_v2"}, "gptq checkpoint_format='gptq_v2'"),
    ({**GPTQ, "is_marlin_format": True}, "gptq checkpoint_format=.gptq. \\(marlin\\)"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method='bitsandbytes'"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8 with weight_block_size=\\[128, 128\\] \\(block-wise\\)"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, "compressed-tensors format='pack-quantized'"),
])
def test_unsupported_checkpoint_formats(qcfg, match):
    with pytest.raises(ValueError, match=f"pre-quantized checkpoint not supported: {match}.*supported checkpoint "
                                         f"formats: awq"):
        ModelConfig.from_hf(hf_dict(qcfg))


def test_detection_and_mismatch():
    cfg = ModelConfig.from_hf(hf_dict({**GPTQ, "desc_act": True, "group_size": -1}))
    assert (cfg.quantization, cfg.quant_group_size, cfg.quant_desc_act) == ("gptq", -1, True)
    assert ModelConfig.from_hf(hf_dict(AWQ), quantization="awq").quant_group_size == 128
    with pytest.raises(ValueError, match="quantization='gptq' does not match the checkpoint, whose "
                                         "quantization_config has quant_method='awq'"):
        ModelConfig.from_hf(hf_dict(AWQ), quantization="gptq")
    with pytest.raises(ValueError, match="quantization='fp8' does not match"):
        ModelConfig.from_hf(hf_dict(AWQ), quantization="fp8")


def _rewrite(qdir, edit):
    path = str(qdir / "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_bad_tensors(tmp_path):
    qdir, _, _, _ = int4_checkpoint(tmp_path, "gptq", 32)
    g_idx = "model.layers.0.mlp.down_proj.g_idx"
    _rewrite(qdir, lambda t: t.__setitem__(g_idx, np.roll(t[g_idx], 1)))
    with pytest.raises(ValueError, match=f"{g_idx} in .* is not the channel order k // 32, but the "
                                         "quantization_config has desc_act=false"):
        jaxllm.load_model(qdir)
    _rewrite(qdir, lambda t: t.__setitem__(g_idx, np.arange(128, dtype=np.int32) // 32))
    _rewrite(qdir, lambda t: t.pop("model.layers.1.self_attn.v_proj.qzeros"))
    with pytest.raises(ValueError, match="checkpoint is missing model.layers.1.self_attn.v_proj.qzeros"):
        jaxllm.load_model(qdir)
    _rewrite(qdir, lambda t: t.__setitem__("model.layers.1.self_attn.v_proj.qzeros", np.zeros((2, 3), np.int32)))
    with pytest.raises(ValueError, match="shape mismatch for 'model.layers.1.self_attn.v_proj.qzeros'.*expected "
                                         "\\(2, 4\\), got \\(2, 3\\)"):
        jaxllm.load_model(qdir)
    cfg = json.loads((qdir / "config.json").read_text())
    cfg["quantization_config"]["group_size"] = 64  # the tensors say 32
    (qdir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="g_idx in .* is not the channel order k // 64"):
        jaxllm.load_model(qdir)
