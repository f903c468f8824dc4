"""Ragged paged attention: the engine's attention over a flattened batch of prefill chunks and decodes.

KV cache layout (one array per layer): ``[2, num_blocks, block_size, num_kv_heads, head_dim]``
(index 0 holds K, 1 holds V).
"""

from .kv_cache import allocate_kv_cache, write_kv_cache
from .reference import ragged_paged_attention_reference
from .dispatch import ragged_paged_attention

__all__ = [
    "allocate_kv_cache",
    "write_kv_cache",
    "ragged_paged_attention",
    "ragged_paged_attention_reference",
]
