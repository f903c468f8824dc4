"""Ragged paged attention: the engine's attention over a flattened batch of prefill chunks and decodes.

KV cache layout (one array per layer): ``[2, num_blocks, block_size, num_kv_heads, head_dim]``
(index 0 holds K, 1 holds V). The cache may be stored in float8 (vLLM's ``kv_cache_dtype="fp8"``): the write
quantizes and every attention implementation reads it, with per-layer k_scale / v_scale (kv_cache.py).
"""

from .dispatch import IMPLEMENTATIONS, AttentionConfig, default_impl, prefill_split, ragged_paged_attention
from .kv_cache import (
    FP8_KV_CACHE_DTYPES,
    KV_CACHE_DTYPES,
    allocate_kv_cache,
    kv_cache_shape,
    resolve_kv_cache_dtype,
    write_kv_cache,
)
from .reference import ragged_paged_attention_reference

__all__ = [
    "FP8_KV_CACHE_DTYPES",
    "IMPLEMENTATIONS",
    "KV_CACHE_DTYPES",
    "AttentionConfig",
    "allocate_kv_cache",
    "default_impl",
    "kv_cache_shape",
    "prefill_split",
    "ragged_paged_attention",
    "ragged_paged_attention_reference",
    "resolve_kv_cache_dtype",
    "write_kv_cache",
]
