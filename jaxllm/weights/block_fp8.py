"""fp8 checkpoints with block-wise scales (``quantization_config.weight_block_size``, e.g. DeepSeek-V3 / R1's
[128, 128]): each linear weight ``<prefix>.weight`` float8_e4m3fn [N, K] comes with ``<prefix>.weight_scale_inv``
float32 [ceil(N / BN), ceil(K / BK)], one scale per BN x BK block (w = fp8 * scale_inv).

The loader reads them as a bf16 checkpoint quantized at load time with ``quantization="fp8"``: each weight is
dequantized on the host (one tensor at a time, float32) and the load-time quantizer re-quantizes it per output
channel on the device (jaxllm.models.quant), so the experts, MLA projections and MLPs run the per-channel fp8
path every other fp8 model runs. A per-channel scale is coarser than 128 x 128 blocks: rows whose blocks have
very different scales lose some precision against a block-wise fp8 GEMM (vLLM's), which we do not have. Tensors
that stay unquantized in these checkpoints (embeddings, norms, the MoE router, lm_head) pass through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import ml_dtypes
import numpy as np

_SCALE = ".weight_scale_inv"


def ml_dtypes_of(name: str):
    """The numpy dtype of a ModelConfig dtype name ("float32", "bfloat16", "float16")."""
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


class BlockFp8Error(ValueError):
    """A block-quantized weight without its scale (or the reverse), or a scale of the wrong shape."""


def dequantize_blocks(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int], name: str,
                      dtype=np.float32) -> np.ndarray:
    """fp8 [N, K] times scale_inv [ceil(N / BN), ceil(K / BK)] broadcast over its blocks -> ``dtype`` [N, K]
    (computed in float32)."""
    (n, k), (bn, bk) = weight.shape, block
    want = (-(-n // bn), -(-k // bk))
    if tuple(scale_inv.shape) != want:
        raise BlockFp8Error(f"{name}{_SCALE} has shape {tuple(scale_inv.shape)}: expected {want} for a [{n}, {k}] "
                            f"weight in blocks of {list(block)}")
    full = np.repeat(np.repeat(np.asarray(scale_inv, np.float32), bn, axis=0), bk, axis=1)[:n, :k]
    return (np.asarray(weight).astype(np.float32) * full).astype(dtype, copy=False)


def block_fp8_stream(tensors: Iterable[tuple[str, np.ndarray, str]], block: tuple[int, int], dtype
                     ) -> Iterator[tuple[str, np.ndarray, str]]:
    """The (name, array, file) stream with every fp8 ``<prefix>.weight`` dequantized by its
    ``<prefix>.weight_scale_inv`` into ``dtype`` (the model's: a bf16 model's host buffers stay bf16, e.g. the
    stacked experts of a layer; the pair is held until both have been read; safetensors orders them
    adjacently)."""
    weights: dict[str, tuple[np.ndarray, str]] = {}
    scales: dict[str, tuple[np.ndarray, str]] = {}
    for name, array, source in tensors:
        if name.endswith(_SCALE):
            prefix = name[:-len(_SCALE)]
            scales[prefix] = (array, source)
        elif name.endswith(".weight") and array.dtype == ml_dtypes.float8_e4m3fn:
            prefix = name[:-len(".weight")]
            weights[prefix] = (array, source)
        else:
            yield name, array, source
            continue
        if prefix in weights and prefix in scales:
            (weight, w_source), (scale, _) = weights.pop(prefix), scales.pop(prefix)
            yield f"{prefix}.weight", dequantize_blocks(weight, scale, block, prefix, dtype), w_source
    for prefix, (_, source) in sorted(weights.items()):
        raise BlockFp8Error(f"{prefix}.weight in {source} is float8_e4m3fn but the checkpoint has no "
                            f"{prefix}{_SCALE}")
    for prefix, (_, source) in sorted(scales.items()):
        raise BlockFp8Error(f"{prefix}{_SCALE} in {source} has no float8_e4m3fn {prefix}.weight to scale")
