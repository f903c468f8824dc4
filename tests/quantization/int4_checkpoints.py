"""Tiny AWQ / GPTQ / fp8 checkpoints written by the tests: a random HF model, its linear weights quantized in
numpy (int4_formats.py) and saved in the checkpoint format, next to an ordinary fp32 checkpoint of the same
model with the dequantized weights (the reference the quantized model must match)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import torch
from hf_models import save_tiny_model
from int4_formats import (
    awq_tensors,
    dequantize,
    dequantize_g_idx,
    gptq_tensors,
    quantize_act_order,
    quantize_groups,
)
from safetensors.numpy import save_file

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _linear_prefixes(model):
    return [name[:-len(".weight")] for name, _ in model.named_parameters()
            if name.endswith(".weight") and name.split(".")[-2] in LINEARS]


def _write(path, hf_model, tensors: dict, quantization_config: dict) -> None:
    # safetensors writes the raw buffer: non-contiguous views must be copied first
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"] = quantization_config
    (path / "config.json").write_text(json.dumps(cfg))


def int4_checkpoint(tmp_path, method: str, group: int, *, sym=False, desc_act=False, arch="LlamaForCausalLM",
                    seed=0, **dims):
    """Write ``tmp_path/quant`` (the AWQ/GPTQ checkpoint) and ``tmp_path/deq`` (its dequantized fp32 twin).
    Returns (quant path, deq path, deq torch model, {prefix: (q, zeros, scales, g_idx or None)})."""
    rng = np.random.RandomState(seed)
    qdir, ddir = tmp_path / "quant", tmp_path / "deq"
    qdir.mkdir()
    ddir.mkdir()
    hf = save_tiny_model(qdir, arch, seed=seed, **dims)
    tensors = {name: p.detach().numpy().copy() for name, p in hf.named_parameters()}
    if "lm_head.weight" not in tensors and not hf.config.tie_word_embeddings:
        tensors["lm_head.weight"] = hf.lm_head.weight.detach().numpy().copy()
    packed_by_prefix = {}
    act_orders = {}
    for prefix in _linear_prefixes(hf):
        w = tensors.pop(prefix + ".weight")
        if desc_act:
            # GPTQ orders channels by the input's Hessian, so layers that share an input share the order
            shared = prefix.rsplit(".", 1)[0] + (".qkv" if "self_attn" in prefix and "o_proj" not in prefix else
                                                  ".gu" if prefix.endswith(("gate_proj", "up_proj")) else "")
            state = act_orders.setdefault(shared, np.random.RandomState(rng.randint(1 << 30)).get_state())
            r = np.random.RandomState()
            r.set_state(state)
            q, zeros, scales, g_idx = quantize_act_order(w, group, sym, r)
            deq = dequantize_g_idx(q, zeros, scales, g_idx)
        else:
            q, zeros, scales = quantize_groups(w, group, sym, rng)
            g_idx, deq = None, dequantize(q, zeros, scales)
        packed = gptq_tensors(q, zeros, scales, g_idx) if method == "gptq" else awq_tensors(q, zeros, scales)
        tensors.update({f"{prefix}.{k}": v for k, v in packed.items()})
        packed_by_prefix[prefix] = (q, zeros, scales, g_idx)
        with torch.no_grad():
            hf.get_parameter(prefix + ".weight").copy_(torch.from_numpy(deq.T.copy()))
    if method == "awq":
        qcfg = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    else:
        qcfg = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": desc_act, "sym": sym,
                "checkpoint_format": "gptq"}
    _write(qdir, hf, tensors, qcfg)
    hf.save_pretrained(str(ddir))
    return qdir, ddir, hf, packed_by_prefix


def fp8_checkpoint(tmp_path, style: str, seed=0, **dims):
    """fp8 checkpoint (``style`` "channel" = compressed-tensors per channel, "tensor" = per-tensor scales with
    input_scale, as AutoFP8 writes) and its dequantized fp32 twin. Returns (quant path, deq path, deq model)."""
    qdir, ddir = tmp_path / "quant", tmp_path / "deq"
    qdir.mkdir()
    ddir.mkdir()
    hf = save_tiny_model(qdir, "LlamaForCausalLM", seed=seed, **dims)
    tensors = {name: p.detach().numpy().copy() for name, p in hf.named_parameters()}
    for prefix in _linear_prefixes(hf):
        w = tensors.pop(prefix + ".weight")
        amax = np.abs(w).max(axis=1, keepdims=True) if style == "channel" else np.abs(w).max(keepdims=True)
        scale = (amax / 448.0).astype(np.float32)
        q = (w / scale).astype(ml_dtypes.float8_e4m3fn)
        tensors[prefix + ".weight"] = q
        tensors[prefix + ".weight_scale"] = scale if style == "channel" else scale.reshape(())
        if style == "tensor":
            tensors[prefix + ".input_scale"] = np.float32(0.05).reshape(())
        with torch.no_grad():
            deq = q.astype(np.float32) * scale
            hf.get_parameter(prefix + ".weight").copy_(torch.from_numpy(deq))
    if style == "channel":
        qcfg = {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                    "num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}}}}
    else:
        qcfg = {"quant_method": "fp8", "activation_scheme": "static"}
    _write(qdir, hf, tensors, qcfg)
    hf.save_pretrained(str(ddir))
    return qdir, ddir, hf
