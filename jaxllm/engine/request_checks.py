"""Request validation for ``LLMEngine.add_request``: everything is checked on the host before any device work,
so a bad request raises (naming it) and never reaches a batch (host side, no jax)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sampling_params import SamplingParams
from .block_manager import BlockManager


def check_prompt(request_id: str, prompt_token_ids: Any, vocab_size: int, max_model_len: int,
                 generates: bool = True) -> list[int]:
    """The prompt as a list of ints; raises TypeError/ValueError naming the request for a bad one.
    ``generates=False`` (pooling): the prompt may fill ``max_model_len``, no room is left for an output token."""
    if hasattr(prompt_token_ids, "tolist"):  # numpy array
        prompt_token_ids = prompt_token_ids.tolist()
    if isinstance(prompt_token_ids, (str, bytes)) or not hasattr(prompt_token_ids, "__iter__"):
        raise TypeError(
            f"request {request_id!r}: prompt_token_ids must be a list of ints, "
            f"got {type(prompt_token_ids).__name__}"
        )
    ids = list(prompt_token_ids)
    if not ids:
        raise ValueError(f"request {request_id!r}: The decoder prompt cannot be empty")
    if set(map(type, ids)) != {int}:  # (one C-level pass: prompts of 10^5 tokens are checked per request)
        bad = next(t for t in ids if type(t) is not int)
        if isinstance(bad, bool) or not isinstance(bad, (int, np.integer)):
            raise TypeError(
                f"request {request_id!r}: prompt token ids must be ints, got "
                f"{type(bad).__name__} ({bad!r})"
            )
        ids = [int(t) for t in ids]
    lo, hi = min(ids), max(ids)
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"request {request_id!r}: Token id {hi if hi >= vocab_size else lo} is out "
            f"of vocabulary (vocab_size={vocab_size})"
        )
    if len(ids) > max_model_len:
        raise ValueError(
            f"request {request_id!r}: The decoder prompt (length {len(ids)}) is longer than "
            f"the maximum model length of {max_model_len}. Make sure that `max_model_len` "
            "is no smaller than the number of text tokens."
        )
    if generates and len(ids) + 1 > max_model_len:
        raise ValueError(
            f"request {request_id!r}: The decoder prompt (length {len(ids)}) plus the number of requested "
            f"output tokens (at least 1) is longer than the maximum model length of {max_model_len}. Make sure "
            "that `max_model_len` is no smaller than the number of text tokens (prompt + requested output tokens)."
        )
    return ids


def check_params(request_id: str, params: SamplingParams, prompt_len: int, *, tokenizer: Any, vocab_size: int,
                 max_model_len: int, block_manager: BlockManager, max_logprobs: int = 20,
                 eos_token_ids: tuple[int, ...] = ()) -> int:
    """Checks that need the engine (vocabulary, tokenizer, KV pool, EOS ids); returns the resolved max_tokens."""
    if tokenizer is None and params.stop:
        raise ValueError(
            f"request {request_id!r}: stop strings {params.stop} need a tokenizer, but the "
            "engine has none (skip_tokenizer_init); use stop_token_ids instead"
        )
    if params.bad_words and tokenizer is None:
        raise ValueError(
            f"request {request_id!r}: bad_words need a tokenizer, but the engine has "
            "none (skip_tokenizer_init)"
        )
    if tokenizer is not None:
        params.update_from_tokenizer(tokenizer)  # bad_words -> token ids (for this tokenizer)
    v = vocab_size
    for name, ids in (
        ("stop_token_ids", params.stop_token_ids),
        ("allowed_token_ids", params.allowed_token_ids or ()),
        ("logit_bias", list(params.logit_bias or ())),
        ("bad_words", [t for w in params.bad_words_token_ids or () for t in w]),
    ):
        bad = [t for t in ids if not 0 <= t < v]
        if bad:
            raise ValueError(
                f"request {request_id!r}: token_id(s) {bad} in {name} contain out-of-vocab "
                f"token ids. Vocabulary size: {v}"
            )
    _check_some_token_allowed(request_id, params, eos_token_ids)
    _check_num_logprobs(request_id, params, v, max_logprobs)
    max_tokens = max_model_len - prompt_len if params.max_tokens is None else params.max_tokens
    # Worst-case KV footprint of one sequence: every position but the last sampled token's.
    max_len = min(max_model_len, prompt_len + max_tokens)
    needed = block_manager.blocks_needed(max(prompt_len, max_len - 1))
    if needed > block_manager.num_blocks:
        raise ValueError(
            f"request {request_id!r}: prompt ({prompt_len} tokens) plus up to "
            f"{max_len - prompt_len} generated tokens needs {needed} KV-cache blocks of "
            f"{block_manager.block_size} tokens, but the cache has only {block_manager.num_blocks}; lower "
            "max_tokens / max_model_len or give the KV cache more memory"
        )
    return max_tokens


def _check_num_logprobs(request_id: str, params: SamplingParams, vocab_size: int, max_logprobs: int) -> None:
    """vLLM's rule: ``logprobs`` / ``prompt_logprobs`` (-1: the whole vocabulary) at most the LLM's
    ``max_logprobs`` (-1: the vocabulary size); and never more than the vocabulary holds."""
    limit = vocab_size if max_logprobs == -1 else max_logprobs
    for name in ("logprobs", "prompt_logprobs"):
        k = getattr(params, name)
        if k == -1:
            k = vocab_size
        if k is not None and k > limit:
            what = "sample logprobs" if name == "logprobs" else "prompt logprobs"
            raise ValueError(f"request {request_id!r}: Requested {what} of {k}, which is greater than max "
                             f"allowed: {limit} (the LLM's max_logprobs)")
        if k is not None and k > vocab_size:
            raise ValueError(f"request {request_id!r}: {name}={k} is larger than the vocabulary ({vocab_size})")


def _check_some_token_allowed(request_id: str, params: SamplingParams, eos_token_ids: tuple[int, ...]) -> None:
    """allowed_token_ids whose every id is banned at the first step (a one-token bad word, logit_bias -inf, or
    with min_tokens > 0 a stop / EOS id) leave nothing to sample: an error here, not a request that ends with
    finish_reason "error" at its first step."""
    if not params.allowed_token_ids:
        return
    banned = {w[0] for w in params.bad_words_token_ids or () if len(w) == 1}
    banned |= {t for t, b in (params.logit_bias or {}).items() if b == float("-inf")}
    if params.min_tokens > 0:
        banned |= set(params.stop_token_ids) | set(eos_token_ids)  # EOS is banned under ignore_eos too
    if set(params.allowed_token_ids) <= banned:
        raise ValueError(f"request {request_id!r}: no token can be sampled: every id in allowed_token_ids="
                         f"{params.allowed_token_ids} is banned (bad_words, logit_bias -inf, or a stop / EOS id "
                         f"while min_tokens={params.min_tokens})")


def check_request_options(request_id: str, priority: Any, policy: str) -> None:
    """Options of ``add_request`` besides the prompt, params and LoRA adapter (vLLM's messages)."""
    if isinstance(priority, bool) or not isinstance(priority, (int, np.integer)):
        raise TypeError(f"request {request_id!r}: priority must be an int, got {type(priority).__name__} "
                        f"({priority!r})")
    if priority != 0 and policy != "priority":
        raise ValueError(f"Got priority {priority} but Priority scheduling is not enabled.")


def truncate_prompt(request_id: str, ids: list[int], truncate_prompt_tokens: int | None,
                    max_model_len: int) -> list[int]:
    """``SamplingParams.truncate_prompt_tokens``: keep the last k tokens (-1: the last max_model_len)."""
    if truncate_prompt_tokens is None:
        return ids
    k = max_model_len if truncate_prompt_tokens == -1 else truncate_prompt_tokens
    if k > max_model_len:
        raise ValueError(f"request {request_id!r}: truncate_prompt_tokens value ({k}) is greater than "
                         f"max_model_len ({max_model_len}). Please, select a smaller truncation size.")
    return list(ids[-k:]) if len(ids) > k else ids


def check_embeds_params(request_id: str, params: Any, pooling_params: Any) -> None:
    """What a prompt_embeds request cannot ask for: prompt logprobs (its prompt has no token ids to score) and
    pooling (the pooling runner reads token ids only)."""
    if pooling_params is not None:
        raise ValueError(f"request {request_id!r}: prompt_embeds is supported for generation only, not pooling")
    if params.prompt_logprobs is not None:
        raise ValueError(f"request {request_id!r}: prompt_logprobs is not supported with prompt_embeds (the "
                         "prompt has no token ids to score)")
