"""GGUF rope-scaling metadata -> HF ``rope_scaling`` (llama, qwen2, qwen3, qwen3moe; the Gemma / Phi-3 keys are in
gguf_families.py): ``{arch}.rope.scaling.*`` keys for linear and yarn, and llama-3.1's ``rope_freqs`` tensor of
precomputed per-frequency divisors, from which the llama3 parameters are recovered."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def f32_to_float(x: float) -> float:
    """A float32 metadata value as the decimal the converter read from config.json (9.99999974e-06 -> 1e-05)."""
    return float(f"{float(x):.7g}")


def rope_scaling_from_metadata(ckpt, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """HF ``rope_scaling`` from ``{arch}.rope.scaling.*`` keys or a llama-3.1 ``rope_freqs`` tensor."""
    kind = ckpt.arch_key("rope.scaling.type")
    if "rope_freqs.weight" in ckpt.tensor_keys():
        return llama3_scaling_from_freqs(ckpt.tensor_array("rope_freqs.weight"), cfg["rope_theta"], cfg["head_dim"])
    if kind in (None, "none"):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(ckpt.arch_key("rope.scaling.factor"))}
    if kind == "yarn" and not ckpt.arch_key("rope.scaling.yarn_log_multiplier"):
        # convert_hf_to_gguf's yarn (Qwen2/Qwen3/Qwen3-MoE long context): factor, original context, betas
        out = {"rope_type": "yarn", "factor": f32_to_float(ckpt.arch_key("rope.scaling.factor")),
               "original_max_position_embeddings": int(ckpt.arch_key("rope.scaling.original_context_length"))}
        for key in ("beta_fast", "beta_slow"):
            if ckpt.arch_key(f"rope.scaling.yarn_{key}") is not None:
                out[key] = f32_to_float(ckpt.arch_key(f"rope.scaling.yarn_{key}"))
        return out
    raise ValueError(f"GGUF rope scaling type {kind!r} is not supported; supported: none, linear, yarn "
                     "(without yarn_log_multiplier), llama3 (rope_freqs tensor)")


def rope_scaling_field(ckpt, cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"rope_scaling": ...}`` from ``rope_scaling_from_metadata``, or {} when the file has no rope scaling."""
    scaling = rope_scaling_from_metadata(ckpt, cfg)
    return {} if scaling is None else {"rope_scaling": scaling}


def llama3_scaling_from_freqs(factors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any]:
    """Recover HF's llama3 ``rope_scaling`` from llama.cpp's per-frequency ``rope_freqs`` divisors [Dh/2].

    llama.cpp precomputes the divisors from (factor, low_freq_factor, high_freq_factor, original context); the
    largest divisor is ``factor``. The other three are not stored, so we try Llama 3.1/3.2's published values
    and accept them only if they reproduce every divisor."""
    factor = float(factors.max())
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    for low, high, orig in ((1.0, 4.0, 8192),):
        wavelen = 2 * math.pi / inv_freq
        smooth = (orig / wavelen - low) / (high - low)
        expected = np.where(wavelen < orig / high, 1.0,
                            np.where(wavelen > orig / low, factor, 1.0 / ((1 - smooth) / factor + smooth)))
        if expected.shape == factors.shape and np.allclose(expected, factors, rtol=1e-4, atol=1e-4):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": orig}
    raise ValueError("GGUF rope_freqs tensor does not match llama3 rope scaling with low_freq_factor=1, "
                     "high_freq_factor=4, original_max_position_embeddings=8192; this rope scaling is not supported")
