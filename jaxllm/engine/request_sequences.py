"""The n sequences of one checked request (plain Python, no jax).

``LLMEngine.add_request`` checks a request, then makes its ``params.n`` sequences here: what every sequence of
the request shares (its stop and EOS ids, the tokens its sampler bans before ``min_tokens``, whether its
sampler needs the token history) is worked out once, and each sequence gets its own rng seed (the request's
``seed + index``, so that ``n`` seeded samples differ and reproduce, as vLLM's), detokenizer and grammar.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sampling_params import SamplingParams
from .detokenizer import IncrementalDetokenizer, TokenizerView
from .sequence import Sequence

SEED_MOD = 2**31  # per-sequence rng seeds fit int32 (and uint32)


def needs_token_history(params: SamplingParams) -> bool:
    """Whether the sampler needs the sequence's past tokens: penalties, or bad words of several tokens."""
    return (params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
            or any(len(w) > 1 for w in params.bad_words_token_ids or ()))


def make_sequences(first_seq_id: int, request_id: str, ids: list[int], params: SamplingParams, *,
                   max_tokens: int, eos_token_ids: list[int], rng: np.random.Generator,
                   view: TokenizerView | None, grammars: list, priority: int, arrival: float,
                   lora_request: Any, cache_salt: str | None, prompt_embeds: Any = None) -> list[Sequence]:
    """Sequences ``first_seq_id`` .. ``first_seq_id + params.n - 1`` of the request. The first EOS id ends a
    sequence as EOS, the model's other EOS ids as stop tokens (none of them under ``ignore_eos``); every EOS
    and stop id is banned while fewer than ``min_tokens`` tokens exist, under ``ignore_eos`` too (vLLM's
    ``all_stop_token_ids``); ``rng`` draws the seeds of an unseeded request; ``grammars[i]`` is sequence i's
    grammar state (or None). ``prompt_embeds``: an EmbedsPrompt's float32 rows [len(ids), D] (``ids`` are then
    placeholders, which the detokenizer does not take as left context)."""
    eos_ids = frozenset() if params.ignore_eos else frozenset(eos_token_ids[:1])
    stop_ids = frozenset(params.stop_token_ids) | (
        frozenset() if params.ignore_eos else frozenset(eos_token_ids[1:]))
    banned = tuple(dict.fromkeys([*eos_token_ids, *params.stop_token_ids]))
    needs_history = needs_token_history(params)
    seqs = []
    for index in range(params.n):
        if params.seed is not None:
            rng_seed = (params.seed + index) % SEED_MOD
        else:
            rng_seed = int(rng.integers(0, SEED_MOD))
        context = ids if prompt_embeds is None else []
        detok = IncrementalDetokenizer(view, context, params) if view is not None and params.detokenize else None
        seqs.append(Sequence(
            first_seq_id + index, request_id, index, ids, params, max_tokens=max_tokens, rng_seed=rng_seed,
            eos_token_ids=eos_ids, stop_token_ids=stop_ids, banned_token_ids=banned,
            want_prompt_logprobs=params.prompt_logprobs is not None and index == 0, detokenizer=detok,
            needs_history=needs_history, grammar=grammars[index], priority=priority, arrival_time=arrival,
            lora_request=lora_request, cache_salt=cache_salt))
        seqs[-1].prompt_embeds = prompt_embeds
    return seqs
