"""The model's generation config: vLLM's ``generation_config`` / ``override_generation_config`` keywords.

``generation_config.json`` (the model's, a named folder's, or none) sets the default ``SamplingParams`` of
``LLM.generate`` and adds EOS ids the engine stops at. It is read once when an ``LLM`` is built; it lives
apart from ``llm.py`` because it is file reading and key mapping, not API.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jaxllm.sampling_params import SamplingParams

# generation_config.json key -> SamplingParams field (the keys vLLM takes as defaults)
GEN_CONFIG_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


def read_generation_config(args: Any, model_path: str | None) -> dict[str, Any]:
    """generation_config.json of the model (``args.generation_config`` "auto" or "vllm") or of a folder, with
    ``args.override_generation_config`` on top. Under "vllm" only the file's ``eos_token_id`` is kept: vLLM's
    neutral sampling defaults, but the model's EOS ids still end requests. ``model_path``: the checkpoint
    folder, None for an in-memory model (which has none unless a folder is named). A named folder without the
    file is a ValueError."""
    where = args.generation_config
    override = dict(args.override_generation_config or {})
    named = where not in ("auto", "vllm")
    folder = os.fspath(where) if named else model_path
    if folder is None:
        return override
    path = os.path.join(folder, "generation_config.json")
    if named and not os.path.isfile(path):
        raise ValueError(f"generation_config={where!r}: no generation_config.json in that folder")
    gen: dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as f:
            gen = json.load(f)
    if where == "vllm":
        gen = {k: v for k, v in gen.items() if k == "eos_token_id"}
    return {**gen, **override}


def default_sampling_params(gen: dict[str, Any]) -> SamplingParams:
    """vLLM's default: SamplingParams() with the generation config's values of ``GEN_CONFIG_KEYS``. Other keys
    are not read, ``do_sample`` included (vLLM samples at the config's temperature whatever it says)."""
    kwargs = {ours: gen[theirs] for theirs, ours in GEN_CONFIG_KEYS.items() if gen.get(theirs) is not None}
    return SamplingParams(**kwargs)


def eos_token_ids(tokenizer: Any, gen: dict[str, Any], model_config: Any) -> list[int]:
    """The ids that end a sequence: the tokenizer's EOS first (the primary one), then the generation config's
    and the model config's, without duplicates and within the vocabulary."""
    ids: list[int] = []
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    extra = gen.get("eos_token_id")
    extra = extra if isinstance(extra, list) else ([extra] if extra is not None else [])
    ids += [int(t) for t in (*extra, *model_config.eos_token_ids)]
    return [t for t in dict.fromkeys(ids) if 0 <= t < model_config.vocab_size]
