"""Prefix-cache hashes with vLLM's ``cache_salt`` (host side, no jax): the salt changes every block's hash (it
is hashed into the first and the chain carries it), equal salts hash equally, and a salt never hashes as a LoRA
adapter's id."""

from __future__ import annotations

import types

from jaxllm.engine.block_manager import BlockManager
from jaxllm.engine.sequence import Sequence
from jaxllm.sampling_params import SamplingParams

TOKENS = list(range(1, 25))  # three full blocks of 8


def _hashes(salt=None, lora_id=0):
    lora = types.SimpleNamespace(lora_int_id=lora_id) if lora_id else None
    seq = Sequence(0, "r", 0, TOKENS, SamplingParams(), max_tokens=1, rng_seed=0, eos_token_ids=frozenset(),
                   stop_token_ids=frozenset(), banned_token_ids=(), want_prompt_logprobs=False,
                   lora_request=lora, cache_salt=salt)
    return BlockManager(8, 8, True)._hash_blocks(seq, 3)


def test_salt_keys_every_block():
    plain, a, b = _hashes(), _hashes("a"), _hashes("b")
    assert a == _hashes("a") and len(set(plain + a + b)) == 9
    assert _hashes("") == plain  # an empty salt is no salt
    assert len({tuple(_hashes("7")), tuple(_hashes(lora_id=7)), tuple(_hashes("7", lora_id=7))}) == 3
