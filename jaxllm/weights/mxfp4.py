"""MXFP4 expert tensors (gpt-oss's released checkpoints, ``quant_method == "mxfp4"``), dequantized at load.

The OCP microscaling FP4 format: blocks of 32 values share one power-of-two scale. A checkpoint stores each
expert tensor ``<name>`` (HF layout [E, N, K] before transformers' transpose: N output, K input features) as
``<name>_blocks`` uint8 [E, N, K / 32, 16] (two e2m1 values a byte, the low nibble first) and
``<name>_scales`` uint8 [E, N, K / 32] (e8m0: the exponent + 127). Dequantized, ``<name>`` is [E, K, N]:
the layout the unquantized checkpoints store (and transformers' ``convert_moe_packed_tensors`` returns), so the
same key map (jaxllm.weights.mappings_gpt_oss) places both.

The experts are dequantized to the model's dtype one expert at a time (float32 work arrays of one expert only),
so a layer of gpt-oss-120b's experts costs its bf16 size on the host, not four times that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.weights.block_fp8 import ml_dtypes_of

# e2m1 value of each 4-bit code (sign bit 3, exponent bits 2-1, mantissa bit 0)
FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      np.float32)
_SUFFIXES = ("_blocks", "_scales")


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray, dtype=np.float32) -> np.ndarray:
    """blocks uint8 [E, N, G, 16], scales uint8 [E, N, G] -> [E, G * 32, N] in ``dtype`` (K = G * 32 input
    features first, as the unquantized checkpoints)."""
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"mxfp4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim != 4 or blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"mxfp4 blocks {blocks.shape} and scales {scales.shape} must be [E, N, G, 16] and "
                         f"[E, N, G]")
    e, n, g, _ = blocks.shape
    out = np.empty((e, g * 32, n), dtype)
    for j in range(e):  # one expert's float32 work arrays at a time
        values = np.empty((n, g, 32), np.float32)
        values[..., 0::2] = FP4_VALUES[blocks[j] & 0x0F]
        values[..., 1::2] = FP4_VALUES[blocks[j] >> 4]
        values = np.ldexp(values, scales[j].astype(np.int32)[..., None] - 127)
        out[j] = values.reshape(n, g * 32).T.astype(dtype)
    return out


def mxfp4_tensors(cfg: ModelConfig, tensors: Iterable[tuple[str, np.ndarray, str]]) -> Iterator:
    """The checkpoint stream with each ``<name>_blocks`` / ``<name>_scales`` pair replaced by the dequantized
    ``<name>`` (in the model's dtype; a pair split over two files is held until both halves arrived). A half
    without its pair is a ValueError naming it."""
    held: dict[str, tuple[str, np.ndarray, str]] = {}
    dtype = ml_dtypes_of(cfg.dtype)
    for name, array, source in tensors:
        if not name.endswith(_SUFFIXES):
            yield name, array, source
            continue
        base, suffix = name[:-len("_blocks")], name[-len("_blocks"):]
        other = held.pop(base, None)
        if other is None:
            held[base] = (suffix, array, source)
            continue
        pair = {suffix: array, other[0]: other[1]}
        yield base, dequantize_mxfp4(pair["_blocks"], pair["_scales"], dtype), source
    if held:
        base, (suffix, _, source) = next(iter(held.items()))
        missing = "_scales" if suffix == "_blocks" else "_blocks"
        raise ValueError(f"mxfp4 checkpoint: {base + suffix!r} in {source} has no {base + missing!r}")
