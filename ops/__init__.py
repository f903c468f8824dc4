"""Kernels for jaxllm (installed as ``jaxllm.ops``). This package never imports the rest of jaxllm.

Each op has a pure-jnp reference (the oracle and the CPU path) and GPU implementations, behind a dispatcher.
"""

from .grouped_matmul import grouped_matmul
from .paged_attention import (
    allocate_kv_cache,
    ragged_paged_attention,
    write_kv_cache,
)

__all__ = ["allocate_kv_cache", "grouped_matmul", "ragged_paged_attention", "write_kv_cache"]
