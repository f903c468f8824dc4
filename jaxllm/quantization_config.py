"""``quantization=``: the methods we support and the parsing of a checkpoint's ``quantization_config`` into
ModelConfig fields. A format we cannot read is a ValueError naming it and listing the supported ones, raised
before any weight is read."""

from __future__ import annotations

from typing import Any

# quantization= methods. "int8"/"fp8": weight-only, applied at load time to an unquantized checkpoint
# (jaxllm/models/quant.py), or for "fp8" read from an fp8 checkpoint. "awq"/"gptq": 4-bit checkpoints
# (jaxllm/models/quant_int4.py), also detected from config.json's quantization_config.
LOAD_TIME_METHODS = ("int8", "fp8")
INT4_METHODS = ("awq", "gptq")
QUANTIZATION_METHODS = (*LOAD_TIME_METHODS, *INT4_METHODS)
MXFP4_QUANTIZATION = "mxfp4"  # gpt-oss's MXFP4 experts, read from the checkpoint only (jaxllm.config_gpt_oss)
GGUF_QUANTIZATION = "gguf"  # a GGUF file's own tensor types (vLLM's name; only with a GGUF model, jaxllm/load.py)
INT4_GROUP_SIZES = {"awq": (32, 64, 128), "gptq": (32, 64, 128, -1)}  # -1: one group per output channel
INT4_GROUP_SIZE = 128  # the usual one (AutoAWQ's and AutoGPTQ's default): the benchmark's random 4-bit weights
_SUPPORTED_CHECKPOINTS = ("awq (bits=4, version='gemm', zero_point=true), gptq (bits=4, checkpoint_format='gptq', "
                          "sym true/false, desc_act true/false), fp8 / fbgemm_fp8 / compressed-tensors with "
                          "float8 e4m3 weights and per-tensor or per-channel weight_scale")


# fp8 checkpoints with block-wise scales are read (dequantized, re-quantized per channel) for these
BLOCK_FP8_ARCHS = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")


def _architecture(hf: dict[str, Any]) -> str:
    return (hf.get("architectures") or [""])[0]


def check_quantization(quantization: Any) -> str | None:
    """None or one of QUANTIZATION_METHODS; anything else is a ValueError naming it."""
    if quantization is None or (isinstance(quantization, str) and quantization in QUANTIZATION_METHODS):
        return quantization
    if quantization == MXFP4_QUANTIZATION:  # (an MXFP4 checkpoint's own format: ModelConfig.from_hf checks it)
        return quantization
    supported = ", ".join(repr(m) for m in (None, *QUANTIZATION_METHODS, MXFP4_QUANTIZATION))
    raise ValueError(f"quantization={quantization!r} is not supported yet; supported: {supported}")


def _unsupported_checkpoint(what: str) -> ValueError:
    return ValueError(f"pre-quantized checkpoint not supported: {what}; supported checkpoint formats: "
                      f"{_SUPPORTED_CHECKPOINTS}")


def _int4_fields(method: str, qcfg: dict[str, Any]) -> dict[str, Any]:
    bits = qcfg.get("bits", qcfg.get("w_bit"))
    if bits != 4:
        raise _unsupported_checkpoint(f"{method} with bits={bits!r} (only bits=4)")
    group = qcfg.get("group_size", qcfg.get("q_group_size"))
    if group not in INT4_GROUP_SIZES[method]:
        raise _unsupported_checkpoint(f"{method} with group_size={group!r} (supported: "
                                      f"{INT4_GROUP_SIZES[method]})")
    if method == "awq":
        version = str(qcfg.get("version", "gemm")).lower()
        if version != "gemm":
            raise _unsupported_checkpoint(f"awq version={qcfg.get('version')!r} (only 'gemm')")
        if not qcfg.get("zero_point", True):
            raise _unsupported_checkpoint("awq with zero_point=false")
        if qcfg.get("modules_to_not_convert"):
            raise _unsupported_checkpoint(f"awq modules_to_not_convert={qcfg['modules_to_not_convert']!r}")
        return {"quant_group_size": group, "quant_desc_act": False}
    fmt = qcfg.get("checkpoint_format", qcfg.get("format", "gptq"))
    if qcfg.get("lm_head"):
        raise _unsupported_checkpoint("gptq with lm_head=true (a quantized lm_head)")
    if fmt != "gptq" or qcfg.get("is_marlin_format"):
        raise _unsupported_checkpoint(f"gptq checkpoint_format={fmt!r}{' (marlin)' if qcfg.get('is_marlin_format') else ''}"
                                      " (only the classic v1 'gptq' packing)")
    return {"quant_group_size": group, "quant_desc_act": bool(qcfg.get("desc_act", False))}


def _block_size(method: str, qcfg: dict[str, Any], arch: str) -> tuple[int, int]:
    """An fp8 checkpoint's ``weight_block_size`` [BN, BK]: read for the architectures in BLOCK_FP8_ARCHS
    (jaxllm.weights.block_fp8), a ValueError naming it for the others and for any other shape."""
    block = qcfg["weight_block_size"]
    if method != "fp8" or arch not in BLOCK_FP8_ARCHS:
        raise _unsupported_checkpoint(f"{method} with weight_block_size={block!r} (block-wise) for {arch or '?'} "
                                      f"(fp8 block-wise checkpoints are read for {', '.join(BLOCK_FP8_ARCHS)})")
    if (not isinstance(block, (list, tuple)) or len(block) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise _unsupported_checkpoint(f"fp8 weight_block_size={block!r} (two positive integers)")
    return int(block[0]), int(block[1])


def _fp8_checkpoint(method: str, qcfg: dict[str, Any]) -> None:
    """fp8 checkpoints we read: per-tensor or per-channel float8_e4m3fn weights (block-wise ones: _block_size)."""
    if qcfg.get("activation_scheme", "dynamic") not in ("dynamic", "static"):
        raise _unsupported_checkpoint(f"{method} activation_scheme={qcfg['activation_scheme']!r}")
    if method != "compressed-tensors":
        return
    if qcfg.get("format") not in ("float-quantized", "naive-quantized"):
        raise _unsupported_checkpoint(f"compressed-tensors format={qcfg.get('format')!r}")
    ignore = [m for m in qcfg.get("ignore") or () if m != "lm_head"]
    if ignore:
        raise _unsupported_checkpoint(f"compressed-tensors ignore={ignore!r} (only lm_head may stay unquantized)")
    for name, group in (qcfg.get("config_groups") or {}).items():
        w = group.get("weights") or {}
        if w.get("type") != "float" or w.get("num_bits") != 8 or w.get("strategy") not in ("tensor", "channel"):
            raise _unsupported_checkpoint(f"compressed-tensors {name} weights type={w.get('type')!r} "
                                          f"num_bits={w.get('num_bits')!r} strategy={w.get('strategy')!r}")


def quantization_fields(quantization: str | None, hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig's quantization fields from the user's ``quantization`` and the checkpoint's
    ``quantization_config`` (which decides when ``quantization`` is None; a mismatch is a ValueError)."""
    qcfg = hf.get("quantization_config") or hf.get("compression_config")
    if not qcfg:
        if quantization in INT4_METHODS:
            raise ValueError(f"quantization={quantization!r} needs a {quantization.upper()} checkpoint, but "
                             f"config.json has no quantization_config")
        return {"quantization": quantization}
    if not isinstance(qcfg, dict):
        raise _unsupported_checkpoint(f"quantization_config={qcfg!r}")
    method = str(qcfg.get("quant_method", "unknown")).lower()
    if method in INT4_METHODS:
        fields = {"quantization": method, **_int4_fields(method, qcfg)}
    elif method in ("fp8", "fbgemm_fp8", "compressed-tensors") and qcfg.get("weight_block_size"):
        _fp8_checkpoint(method, qcfg)  # (dequantized at load, re-quantized per channel: not quant_from_checkpoint)
        fields = {"quantization": "fp8", "quant_block_size": _block_size(method, qcfg, _architecture(hf))}
    elif method in ("fp8", "fbgemm_fp8", "compressed-tensors"):
        _fp8_checkpoint(method, qcfg)
        fields = {"quantization": "fp8", "quant_from_checkpoint": True}
    else:
        raise _unsupported_checkpoint(f"quant_method={method!r}")
    if quantization is not None and quantization != fields["quantization"]:
        raise ValueError(f"quantization={quantization!r} does not match the checkpoint, whose quantization_config "
                         f"has quant_method={method!r} (use quantization=None or {fields['quantization']!r})")
    return fields
