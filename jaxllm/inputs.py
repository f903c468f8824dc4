"""Normalising what ``LLM.generate`` accepts into (prompt text or None, prompt token ids) pairs.

Accepted, as in vLLM: a str, a ``{"prompt": str}`` TextPrompt, a ``{"prompt_token_ids": [...]}``
TokensPrompt, or a list of any of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxllm.sampling_params import SamplingParams, check_unicode


def as_prompt_list(prompts: Any) -> list[Any]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
        items = list(prompts)
        if items and all(isinstance(p, int) for p in items):
            raise TypeError("a list of ints is ambiguous: pass token ids as {'prompt_token_ids': [...]}")
        return items
    raise TypeError(f"prompts must be a str, a prompt dict or a list of them, got {type(prompts).__name__}")


def token_id_list(index: int, ids: Any) -> list[int]:
    """``prompt_token_ids`` as a list of Python ints. Besides a list of ints (vLLM's type) it takes what JAX and
    numpy code has at hand: numpy integer scalars and 1-D integer arrays (anything with ``ndim == 1`` and
    ``tolist()``). Floats, bools and nested lists are a TypeError naming the prompt and the first bad value."""
    if getattr(ids, "ndim", None) == 1 and hasattr(ids, "tolist"):
        ids = ids.tolist()
    if type(ids) is list and ids and set(map(type, ids)) == {int}:  # the common case, in one C-level pass
        return list(ids)
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"prompt {index}: prompt_token_ids must be a list of ints, got {type(ids).__name__}")
    out = []
    for t in ids:
        dtype_kind = getattr(getattr(t, "dtype", None), "kind", None)
        if isinstance(t, bool) or dtype_kind == "b" or getattr(t, "ndim", 0) != 0:
            raise TypeError(f"prompt {index}: prompt_token_ids must hold ints, got {t!r}")
        try:
            out.append(t.__index__())
        except (AttributeError, TypeError):
            raise TypeError(f"prompt {index}: prompt_token_ids must hold ints, got {t!r}") from None
    return out


def tokenize_prompt(index: int, prompt: Any, tokenizer) -> tuple[str | None, list[int]]:
    """(text, token ids) of one prompt; raises naming the prompt's index."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, dict):
        if "prompt_token_ids" in prompt:
            return prompt.get("prompt"), token_id_list(index, prompt["prompt_token_ids"])
        if "prompt" not in prompt:
            raise ValueError(f"prompt {index}: a prompt dict needs 'prompt' or 'prompt_token_ids', "
                             f"got keys {sorted(prompt)}")
        unsupported = sorted(set(prompt) - {"prompt"})
        if unsupported:
            raise ValueError(f"prompt {index}: unsupported prompt fields {unsupported}")
        text = prompt["prompt"]
        if not isinstance(text, str):
            raise TypeError(f"prompt {index}: 'prompt' must be a str, got {type(text).__name__}")
    else:
        raise TypeError(f"prompt {index} must be a str or a prompt dict, got {type(prompt).__name__}")
    if tokenizer is None:
        raise ValueError(f"prompt {index} is text but the tokenizer was skipped (skip_tokenizer_init=True); "
                         "pass {'prompt_token_ids': [...]}")
    check_unicode(f"prompt {index}", text)
    return text, tokenizer(text).input_ids


def as_params_list(sampling_params: Any, num_prompts: int, default: SamplingParams) -> list[SamplingParams]:
    if sampling_params is None:
        return [default] * num_prompts
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * num_prompts
    if isinstance(sampling_params, Sequence) and not isinstance(sampling_params, str):
        params = list(sampling_params)
        if len(params) != num_prompts:
            raise ValueError(f"the lengths of prompts ({num_prompts}) and sampling_params ({len(params)}) "
                             "must be the same")
        for i, p in enumerate(params):
            if not isinstance(p, SamplingParams):
                raise TypeError(f"sampling_params[{i}] must be a SamplingParams, got {type(p).__name__}")
        return params
    raise TypeError(f"sampling_params must be a SamplingParams or a list of them, got "
                    f"{type(sampling_params).__name__}")
