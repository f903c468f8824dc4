"""``LLMEngine``'s construction: its arguments checked before anything is built (sizes, the runner's interface,
the EOS ids) and its block manager (host side, no jax)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config_rope import prefix_cache_regime
from .block_manager import BlockManager
from .host_tier import HostTier


def check_engine_sizes(runner: Any, **sizes: int) -> None:
    """Every size (``num_blocks``, ``block_size``, ``max_num_seqs``, ``max_num_batched_tokens``,
    ``max_model_len``, ``vocab_size``) a positive int, a token budget that holds a token of every sequence, and a
    runner with ``execute(batch)``; ValueError/TypeError naming the offending value."""
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if sizes["max_num_batched_tokens"] < sizes["max_num_seqs"]:
        raise ValueError(
            f"max_num_batched_tokens ({sizes['max_num_batched_tokens']}) must be greater than or equal "
            f"to max_num_seqs ({sizes['max_num_seqs']})."
        )
    if not callable(getattr(runner, "execute", None)):
        raise TypeError(f"runner must have an execute(batch) method, got {type(runner).__name__}")


def eos_id_list(eos_token_ids: Iterable[int] | int | None, vocab_size: int) -> list[int]:
    """The EOS ids as a list without repeats (the first one stays first: it is the primary EOS); an id outside
    the vocabulary is a ValueError."""
    if eos_token_ids is None:
        eos = []
    elif isinstance(eos_token_ids, int):
        eos = [eos_token_ids]
    else:
        eos = list(dict.fromkeys(int(t) for t in eos_token_ids))
    if any(not 0 <= t < vocab_size for t in eos):
        raise ValueError(f"eos_token_ids {eos} must be in [0, vocab_size={vocab_size})")
    return eos


def make_block_manager(num_blocks: int, block_size: int, enable_prefix_caching: bool, num_host_blocks: int,
                       host_prefix_cache: bool, model_config: Any) -> BlockManager:
    """The paged KV cache's block manager, with a host tier of ``num_host_blocks`` slots (0: none) that also keeps
    evicted prefix blocks with ``host_prefix_cache``. The model's ropes' length regimes key the prefix cache."""
    if host_prefix_cache and not (num_host_blocks and enable_prefix_caching):
        raise ValueError("host_prefix_cache needs a host tier (swap_space > 0) and enable_prefix_caching")
    host = HostTier(num_host_blocks, host_prefix_cache) if num_host_blocks else None
    rope_regime = prefix_cache_regime((getattr(model_config, "rope", None), getattr(model_config, "rope_local", None)))
    return BlockManager(num_blocks, block_size, enable_prefix_caching, host, rope_regime)
