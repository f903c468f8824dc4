"""Per-prompt preparation of the pooling methods (host-side, no jax): truncation sizes, one ``PoolingParams``
copy per prompt, plain-text prompts tokenized in batches, and left truncation in the tokenizer (vLLM's
``truncation_side="left"``).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

from jaxllm.inputs import check_tokenization_kwargs, per_prompt
from jaxllm.pooling_params import PoolingParams

# a prompt whose truncation size is invalid: it takes the per-prompt path, which raises naming it
UNBATCHED = object()
# tokenizer-call keywords under which one call over a list gives each text the ids a call of its own gives
_BATCHABLE_KWARGS = frozenset({"add_special_tokens", "truncation", "max_length"})


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


def text_ids(tokenizer, items: list, params: list[PoolingParams], truncate_prompt_tokens: int | None,
             tokenization_kwargs: dict | None, max_model_len: int, lower: bool) -> dict[int, list[int]]:
    """The plain-text prompts' token ids, tokenized in batches (``batch_tokenized``), before the per-prompt pass
    (``LLM._pooling_requests``); what cannot be batched, bad keywords or truncation sizes included, is left to
    that pass, which raises in prompt order."""
    try:
        kwargs = check_tokenization_kwargs(tokenization_kwargs)
    except (TypeError, ValueError):
        return {}
    sizes = []
    for p in params:
        wanted = p.truncate_prompt_tokens if truncate_prompt_tokens is None else truncate_prompt_tokens
        try:
            sizes.append(truncation_size(max_model_len, wanted))
        except (TypeError, ValueError):
            sizes.append(UNBATCHED)
    return batch_tokenized(tokenizer, items, sizes, kwargs, lower)


def batch_tokenized(tokenizer, items: list, sizes: list, kwargs: dict, lower: bool) -> dict[int, list[int]]:
    """{prompt index: token ids} of the plain-text prompts (a str or ``{"prompt": str}``), one tokenizer call per
    truncation size: a fast (Rust) tokenizer encodes a list on all cores, where a call per text runs on one
    (about 1 ms a 400-token document). ``sizes[i]``: prompt i's ``keep_last`` (None: no truncation) or
    ``UNBATCHED``; ``lower``: lower-case the text first (sentence-transformers' do_lower_case). The prompts left
    out (token ids, other dicts, invalid Unicode, a slow tokenizer, other keywords) are tokenized one by one,
    where their errors are raised in prompt order."""
    if tokenizer is None or not getattr(tokenizer, "is_fast", False) or not set(kwargs) <= _BATCHABLE_KWARGS:
        return {}
    groups: dict[int | None, list[tuple[int, str]]] = {}
    for i, (item, size) in enumerate(zip(items, sizes)):
        text = item.get("prompt") if type(item) is dict and item.keys() == {"prompt"} else item
        if size is UNBATCHED or not isinstance(text, str) or not _encodable(text):
            continue
        groups.setdefault(size, []).append((i, text.lower() if lower else text))
    out: dict[int, list[int]] = {}
    for size, members in groups.items():
        texts = [text for _, text in members]
        if size is None:
            ids = tokenizer(texts, **kwargs).input_ids
        else:
            with left_truncation(tokenizer):
                ids = tokenizer(texts, **{**kwargs, "truncation": True, "max_length": size}).input_ids
        out.update(zip((i for i, _ in members), ids))
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the per-prompt path names it
        return False
    return True


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
