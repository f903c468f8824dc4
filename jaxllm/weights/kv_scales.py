"""Calibrated fp8 KV-cache scales read from a checkpoint.

Checkpoints quantized with an fp8 KV cache (llm-compressor / compressed-tensors ``kv_cache_scheme``, ModelOpt,
vLLM's fp8 format) ship one scale per layer for keys and one for values: ``model.layers.{i}.self_attn.k_scale``
and ``.v_scale``, or an older single ``.kv_scale`` for both; a scalar or a one-element tensor. The cache then
stores ``k / k_scale`` in fp8 and the attention kernels multiply back (jaxllm.ops.paged_attention.kv_cache).

Each layer's attention holds them as ``kv_scale`` [2] float32 (k, v), 1.0 where the checkpoint has none (vLLM's
default without calibration). They only take effect with ``kv_cache_dtype="fp8"``; a bf16 cache ignores them, as
in vLLM.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

KV_SCALE_PARAM = "kv_scale"
_KEY = re.compile(r"model\.layers\.(\d+)\.self_attn\.(k_scale|v_scale|kv_scale)")
_COLUMNS = {"k_scale": (0,), "v_scale": (1,), "kv_scale": (0, 1)}


def kv_scale_path(layer: int) -> tuple:
    """Path of a layer's ``kv_scale`` in the model's NNX state."""
    return ("layers", layer, "self_attn", KV_SCALE_PARAM)


class KVScaleCollector:
    """Takes the k/v scale tensors out of a checkpoint stream; ``arrays`` then gives every layer's ``kv_scale``.

    ``error``: the exception class raised for a bad tensor (the loader's WeightLoadError)."""

    def __init__(self, num_layers: int, error: type[Exception] = ValueError):
        self.values = np.ones((num_layers, 2), np.float32)
        self.error = error
        self.num_found = 0

    def take(self, name: str, array: np.ndarray, source: str) -> bool:
        """True if ``name`` is a k/v scale (consumed and checked); False for any other tensor."""
        m = _KEY.fullmatch(name)
        if m is None:
            return False
        layer = int(m.group(1))
        if layer >= len(self.values):
            raise self.error(f"unexpected key {name!r} in {source}: the model has {len(self.values)} layers")
        if np.size(array) != 1:
            raise self.error(f"{name!r} in {source} has shape {tuple(np.shape(array))}: a KV-cache scale must be a "
                             f"scalar or hold one value")
        value = float(np.asarray(array, np.float32).reshape(()))
        if not (math.isfinite(value) and value > 0):
            raise self.error(f"{name!r} in {source} is {value!r}: a KV-cache scale must be a finite number > 0")
        self.values[layer, list(_COLUMNS[m.group(2)])] = value
        self.num_found += 1
        return True

    def arrays(self, mesh: Mesh) -> dict[tuple, jax.Array]:
        """{kv_scale path: [2] float32 replicated over ``mesh``} for every layer."""
        replicated = NamedSharding(mesh, PartitionSpec())
        return {kv_scale_path(i): jax.device_put(row, replicated) for i, row in enumerate(self.values)}
