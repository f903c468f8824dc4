"""MXFP4 expert tensors (gpt-oss's released checkpoints, ``quant_method == "mxfp4"``), dequantized at load.

The OCP microscaling FP4 format: blocks of 32 values share one power-of-two scale. A checkpoint stores each
expert tensor ``<name>`` (HF layout [E, N, K] before transformers' transpose: N output, K input features) as
``<name>_blocks`` uint8 [E, N, K / 32, 16] (two e2m1 values a byte, the low nibble first) and
``<name>_scales`` uint8 [E, N, K / 32] (e8m0: the exponent + 127). Dequantized, ``<name>`` is [E, K, N]:
the layout the unquantized checkpoints store (and transformers' ``convert_moe_packed_tensors`` returns), so the
same key map (jaxllm.weights.mappings_gpt_oss) places both.

The experts are dequantized to the model's dtype a few at a time by one fused XLA loop on the host's CPU backend
(multithreaded: numpy's gathers and transposes take about half an hour on one core over gpt-oss-120b's 9k
expert matrices), so a layer of experts costs its bf16 size on the host, not four times that.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.config import ModelConfig
from jaxllm.weights.block_fp8 import ml_dtypes_of

# e2m1 value of each 4-bit code (sign bit 3, exponent bits 2-1, mantissa bit 0)
FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      np.float32)
_SUFFIXES = ("_blocks", "_scales")


def _host_device():
    """The CPU backend (XLA's multithreaded loops: several times numpy's speed on a host of many cores), or
    the default device where jax runs without one (JAX_PLATFORMS naming only the GPU)."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return None


@functools.partial(jax.jit, static_argnames="dtype")
def _dequantize(blocks: jax.Array, scales: jax.Array, dtype) -> jax.Array:
    """blocks uint8 [e, N, G, 16], scales uint8 [e, N, G] -> [e, G * 32, N] in ``dtype`` (one fused loop)."""
    lut = jnp.asarray(FP4_VALUES)
    pairs = jnp.stack([lut[(blocks & 0x0F).astype(jnp.int32)], lut[(blocks >> 4).astype(jnp.int32)]], axis=-1)
    e, n, g, _ = blocks.shape
    values = pairs.reshape(e, n, g, 32) * jnp.exp2(scales.astype(jnp.float32) - 127.0)[..., None]
    return values.reshape(e, n, g * 32).transpose(0, 2, 1).astype(dtype)


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray, dtype=np.float32) -> np.ndarray:
    """blocks uint8 [E, N, G, 16], scales uint8 [E, N, G] -> numpy [E, G * 32, N] in ``dtype`` (K = G * 32
    input features first, as the unquantized checkpoints). Converted a few experts at a time (about 2^27 values
    per call), so the work arrays stay small whatever the layer's size."""
    blocks, scales = np.asarray(blocks), np.asarray(scales)
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"mxfp4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim != 4 or blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"mxfp4 blocks {blocks.shape} and scales {scales.shape} must be [E, N, G, 16] and "
                         f"[E, N, G]")
    e, n, g, _ = blocks.shape
    out = np.empty((e, g * 32, n), dtype)
    step = max(1, (1 << 27) // max(1, n * g * 32))
    device = _host_device()
    for j in range(0, e, step):
        chunk = [jax.device_put(a[j:j + step], device) for a in (blocks, scales)]
        out[j:j + step] = np.asarray(_dequantize(*chunk, dtype=jnp.dtype(dtype)))
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
