"""Per-prompt preparation of the pooling methods (host-side, no jax): truncation sizes, one ``PoolingParams``
copy per prompt, and left truncation in the tokenizer (vLLM's ``truncation_side="left"``).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

from jaxllm.inputs import per_prompt
from jaxllm.pooling_params import PoolingParams


def truncation_size(max_model_len: int, truncate_prompt_tokens: int | None) -> int | None:
    """Tokens to keep (the last k), as vLLM: -1 = ``max_model_len``; larger than it is an error."""
    if truncate_prompt_tokens is None:
        return None
    if truncate_prompt_tokens == -1:
        return max_model_len
    if truncate_prompt_tokens > max_model_len:
        raise ValueError(f"truncate_prompt_tokens value ({truncate_prompt_tokens}) is greater than "
                         f"max_model_len ({max_model_len}). Please, select a smaller truncation size.")
    return truncate_prompt_tokens


def params_list(pooling_params: Any, n: int) -> list[PoolingParams]:
    """One private copy per prompt (verify fills defaults in place)."""
    return [p.clone() for p in per_prompt(pooling_params, n, PoolingParams, "pooling_params", PoolingParams())]


def is_text(item: Any) -> bool:
    """A str or TextPrompt (tokenized here) rather than token ids."""
    return isinstance(item, str) or (isinstance(item, dict) and "prompt_token_ids" not in item)


def lower_text(text: Any) -> Any:
    return text.lower() if isinstance(text, str) else text  # a non-str is reported by tokenize_prompt


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for the duration (restored as it was). A pooling call allocates
    a few containers per prompt (its parameters, its output vector as a list of floats), and every collection
    of the oldest generation walks all live containers again, the caller's prompts included: about half the
    host time of embedding 10^4 documents. Nothing made here forms cycles; reference counting frees it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def left_truncation(tokenizer):
    """The tokenizer truncating from the left for the duration (HF tokenizers take the side as an attribute,
    not a call argument)."""
    side = getattr(tokenizer, "truncation_side", None)
    if side is None:
        yield
        return
    tokenizer.truncation_side = "left"
    try:
        yield
    finally:
        tokenizer.truncation_side = side
