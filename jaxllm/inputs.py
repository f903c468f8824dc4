"""vLLM's prompt types, and normalising what ``LLM.generate`` accepts into (prompt text or None, token ids).

Accepted, as in vLLM: a str, a list of token ids, a ``{"prompt": str}`` TextPrompt, a
``{"prompt_token_ids": [...]}`` TokensPrompt (optionally with the ``"prompt"`` text it came from), or a list of
any of these. A flat list of ints is one prompt of token ids; a list of lists of ints is a batch of them.
A prompt dict may carry vLLM's ``cache_salt`` (``split_cache_salt``): requests with different salts never share
prefix-cache blocks.
A ``{"prompt_embeds": array [T, hidden_size]}`` EmbedsPrompt (vLLM's, with ``LLM(enable_prompt_embeds=True)``)
feeds the model embeddings the caller computed (``prompt_embeds_array``).
Multimodal fields (``multi_modal_data``, ...) are not supported: a prompt dict with them is a ValueError.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np

from jaxllm.sampling_checks import check_unicode
from jaxllm.sampling_params import SamplingParams


class TextPrompt(TypedDict):
    """A text prompt, tokenized by the engine; ``cache_salt`` (optional) isolates its prefix-cache blocks."""

    prompt: str
    cache_salt: NotRequired[str]


class _TokensPromptRequired(TypedDict):
    prompt_token_ids: list[int]


class TokensPrompt(_TokensPromptRequired, total=False):
    """A tokenized prompt; ``prompt`` (optional) is the text it came from, reported in ``RequestOutput.prompt``;
    ``cache_salt`` (optional) isolates its prefix-cache blocks."""

    prompt: str
    cache_salt: str


class _EmbedsPromptRequired(TypedDict):
    prompt_embeds: Any


class EmbedsPrompt(_EmbedsPromptRequired, total=False):
    """Prompt embeddings [T, hidden_size] (numpy, jax or torch; float), fed to the model in place of the token
    embedding rows; ``cache_salt`` (optional) isolates its prefix-cache blocks. Needs
    ``LLM(enable_prompt_embeds=True)``."""

    cache_salt: str


_MEDIA_FIELDS = frozenset({"multi_modal_data", "mm_processor_kwargs", "multi_modal_uuids"})

SingletonPrompt = str | list[int] | TextPrompt | TokensPrompt | EmbedsPrompt
# What one request's prompt may be (vLLM's name; its encoder-decoder form is not supported).
PromptType = SingletonPrompt


def as_prompt_list(prompts: Any) -> list[Any]:
    """The prompts of one call as a list of single prompts. A non-empty list of ints is one prompt of token ids
    (vLLM's ``prompt_to_seq``), so ``[[1, 2], [3]]`` is two prompts and ``[1, 2]`` one; a list mixing ints with
    other prompts is a list of prompts (each int then a bad prompt, named by its index)."""
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, list) and prompts and all(_is_int(p) for p in prompts):
        return [prompts]
    if isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
        return list(prompts)
    raise TypeError(f"prompts must be a str, a list of token ids, a prompt dict or a list of them, got "
                    f"{type(prompts).__name__}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def name_the_prompt(error: ValueError | TypeError, request_ids: list[str]) -> ValueError | TypeError:
    """An engine validation error about ``request '<id>'`` restated about the prompt's index in the call (the
    request ids are internal counters the caller never saw); other errors are returned as they are."""
    message = str(error)
    for index, rid in enumerate(request_ids):
        prefix = f"request {rid!r}: "
        if message.startswith(prefix):
            return (ValueError if isinstance(error, ValueError) else TypeError)(
                f"prompt {index}: {message.removeprefix(prefix)}")
    return error


def split_cache_salt(index: int | str, prompt: Any) -> tuple[str | None, Any]:
    """(vLLM's ``cache_salt`` of a prompt dict, the prompt without it). The salt is hashed into the first
    prefix-cache block (``BlockManager``), so requests with different salts never share cached blocks and equal
    salts do; an empty or missing salt is none (as vLLM: the prompt shares with every unsalted one). A salt that
    is not a str is a TypeError naming the prompt."""
    if not isinstance(prompt, dict) or "cache_salt" not in prompt:
        return None, prompt
    salt = prompt["cache_salt"]
    if salt is not None and not isinstance(salt, str):
        raise TypeError(f"{_label(index)}: cache_salt must be a str, got {type(salt).__name__} ({salt!r})")
    return salt or None, {k: v for k, v in prompt.items() if k != "cache_salt"}


def _label(index: int | str) -> str:
    return f"prompt {index}" if isinstance(index, int) else index


def token_id_list(index: int | str, ids: Any) -> list[int]:
    """``prompt_token_ids`` as a list of Python ints. Besides a list of ints (vLLM's type) it takes what JAX and
    numpy code has at hand: numpy integer scalars and 1-D integer arrays (anything with ``ndim == 1`` and
    ``tolist()``). Floats, bools and nested lists are a TypeError naming the prompt (``index``: its position,
    or a label such as "request 'a'") and the first bad value."""
    if type(ids) is list and (not ids or set(map(type, ids)) == {int}):  # one C-level pass
        return ids  # the common case, already checked (the LLM passes its lists on to the engine)
    label = _label(index)
    if getattr(ids, "ndim", None) == 1 and hasattr(ids, "tolist"):
        ids = ids.tolist()
    if type(ids) is list and ids and set(map(type, ids)) == {int}:  # the common case, in one C-level pass
        return list(ids)
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{label}: prompt_token_ids must be a list of ints, got {type(ids).__name__}")
    out = []
    for t in ids:
        dtype_kind = getattr(getattr(t, "dtype", None), "kind", None)
        if isinstance(t, bool) or dtype_kind == "b" or getattr(t, "ndim", 0) != 0:
            raise TypeError(f"{label}: prompt_token_ids must hold ints, got {t!r}")
        try:
            out.append(t.__index__())
        except (AttributeError, TypeError):
            raise TypeError(f"{label}: prompt_token_ids must hold ints, got {t!r}") from None
    return out


def tokenize_prompt(index: int | str, prompt: Any, tokenizer,
                    tokenization_kwargs: dict[str, Any] | None = None) -> tuple[str | None, list[int]]:
    """(text, token ids) of one str / TextPrompt / TokensPrompt; raises naming the prompt (see token_id_list).
    ``tokenization_kwargs`` go to the tokenizer's call for text (e.g. truncation, max_length,
    add_special_tokens)."""
    label = _label(index)
    if isinstance(prompt, list):  # token ids (vLLM's list[int] prompt)
        return None, token_id_list(label, prompt)
    if is_embeds_prompt(prompt):
        raise ValueError(f"{label}: prompt_embeds prompts are supported by LLM.generate only")
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, dict):
        allowed = {"prompt_token_ids", "prompt"} if "prompt_token_ids" in prompt else {"prompt"}
        unsupported = sorted(set(prompt) - allowed)
        if "prompt" not in prompt and "prompt_token_ids" not in prompt:
            raise ValueError(f"{label}: a prompt dict needs 'prompt' or 'prompt_token_ids', "
                             f"got keys {sorted(prompt)}")
        if unsupported:
            media = " (multimodal inputs: jaxllm serves text-only models)" if set(unsupported) & _MEDIA_FIELDS else ""
            raise ValueError(f"{label}: unsupported prompt fields {unsupported}{media}")
        text = prompt.get("prompt")
        has_ids = "prompt_token_ids" in prompt
        if not isinstance(text, str) and not (has_ids and text is None):  # with ids, the text is optional
            raise TypeError(f"{label}: 'prompt' must be a str, got {type(text).__name__}")
        if has_ids:
            return text, token_id_list(label, prompt["prompt_token_ids"])
    else:
        raise TypeError(f"{label} must be a str, a list of token ids or a prompt dict, got {type(prompt).__name__}")
    if tokenizer is None:
        raise ValueError(f"{label} is text but the tokenizer was skipped (skip_tokenizer_init=True); "
                         "pass {'prompt_token_ids': [...]}")
    check_unicode(label, text)
    return text, tokenizer(text, **check_tokenization_kwargs(tokenization_kwargs)).input_ids


def is_embeds_prompt(prompt: Any) -> bool:
    """Whether ``prompt`` is an EmbedsPrompt dict."""
    return isinstance(prompt, dict) and "prompt_embeds" in prompt


def prompt_embeds_array(label: str, prompt: dict, hidden_size: int | None) -> np.ndarray:
    """An EmbedsPrompt's embeddings as a float32 numpy array [T, hidden_size] (a leading batch axis of 1 is
    dropped, as vLLM). Accepts numpy, jax and torch arrays (any float dtype, bf16 included). ``hidden_size``:
    the model's, or None when the engine was built without ``enable_prompt_embeds``. ValueError/TypeError
    naming the prompt for: the option off, other keys than ``prompt_embeds``, a non-float or wrongly shaped
    array, no rows, a NaN or infinity."""
    if hidden_size is None:
        raise ValueError(f"{label}: prompt_embeds needs LLM(..., enable_prompt_embeds=True)")
    extra = sorted(set(prompt) - {"prompt_embeds"})
    if extra:
        raise ValueError(f"{label}: unsupported fields {extra} beside prompt_embeds")
    value = prompt["prompt_embeds"]
    if hasattr(value, "detach"):  # torch: numpy has no bfloat16, so go through float32
        value = value.detach().float().cpu().numpy()
    if isinstance(value, (str, bytes)) or not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"{label}: prompt_embeds must be an array [num_tokens, {hidden_size}], "
                        f"got {type(value).__name__}")
    if np.dtype(value.dtype).kind != "f" and "bfloat16" not in str(value.dtype):
        raise TypeError(f"{label}: prompt_embeds must hold floats, got dtype {value.dtype}")
    embeds = np.asarray(value).astype(np.float32)
    if embeds.ndim == 3 and embeds.shape[0] == 1:
        embeds = embeds[0]
    if embeds.ndim != 2 or embeds.shape[1] != hidden_size:
        raise ValueError(f"{label}: prompt_embeds must have shape [num_tokens, {hidden_size}] (the model's "
                         f"hidden size), got {tuple(embeds.shape)}")
    if embeds.shape[0] == 0:
        raise ValueError(f"{label}: prompt_embeds is empty (no token embeddings)")
    if not np.isfinite(embeds).all():
        raise ValueError(f"{label}: prompt_embeds holds NaN or infinite values")
    return np.ascontiguousarray(embeds)


def prompt_to_ids(label: str, prompt: Any, tokenizer,
                  tokenization_kwargs: dict[str, Any] | None = None) -> tuple[str | None, Any]:
    """What ``LLMEngine.add_request`` takes as a prompt: a str or prompt dict (as ``tokenize_prompt``), or token
    ids as a list / 1-D array of ints (returned as given; the engine checks them)."""
    if isinstance(prompt, (str, dict)):
        return tokenize_prompt(label, prompt, tokenizer, tokenization_kwargs)
    if isinstance(prompt, (bytes, bytearray)) or not hasattr(prompt, "__iter__"):
        raise TypeError(f"{label}: the prompt must be a str, a prompt dict or a list of token ids, "
                        f"got {type(prompt).__name__}")
    return None, prompt


def check_tokenization_kwargs(kwargs: Any) -> dict[str, Any]:
    """``tokenization_kwargs`` (keyword arguments of the HF tokenizer's call) as a dict."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"tokenization_kwargs must be a dict of keyword arguments, got {kwargs!r}")
    if "return_tensors" in kwargs:
        raise ValueError("tokenization_kwargs: return_tensors is not supported (token ids are lists)")
    return kwargs


def per_prompt(value: Any, num_prompts: int, kind: type, name: str, default: Any) -> list:
    """``value`` for each of ``num_prompts`` prompts: one ``kind`` for all (``default`` when None), or a sequence
    of exactly ``num_prompts`` of them (``name`` is the argument the errors name)."""
    if value is None:
        value = default
    if isinstance(value, kind):
        return [value] * num_prompts
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != num_prompts:
            raise ValueError(f"the lengths of prompts ({num_prompts}) and {name} ({len(items)}) must be the same")
        for i, item in enumerate(items):
            if not isinstance(item, kind):
                raise TypeError(f"{name}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
        return items
    raise TypeError(f"{name} must be a {kind.__name__} or a list of them, got {type(value).__name__}")


def as_params_list(sampling_params: Any, num_prompts: int, default: SamplingParams) -> list[SamplingParams]:
    return per_prompt(sampling_params, num_prompts, SamplingParams, "sampling_params", default)


def priority_list(priority: Any, num_prompts: int) -> list[int]:
    """One priority per prompt (0 for all when None); the engine checks the scheduling policy."""
    if priority is None:
        return [0] * num_prompts
    if isinstance(priority, (str, bytes)) or not hasattr(priority, "__len__"):
        raise TypeError(f"priority must be a list of ints (one per prompt), got {type(priority).__name__}")
    if len(priority) != num_prompts:
        raise ValueError(f"The lengths of prompts ({num_prompts}) and priority ({len(priority)}) must be the same.")
    return list(priority)
