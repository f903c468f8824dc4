"""Prefix-cache hashes under a length-dependent rope (host side, no jax): the first block carries the prompt's
rope regime (``RopeConfig.length_regime``), so longrope's long prompts share among themselves and never with
short ones, dynamic NTK's long prompts share only with prompts of their own length, prompts within the original
length hash as under a plain rope, and length-independent ropes hash exactly as without a regime."""

from __future__ import annotations

from jaxllm.config_rope import prefix_cache_regime, ropes_from_hf
from jaxllm.engine.block_manager import BlockManager
from jaxllm.engine.sequence import Sequence
from jaxllm.sampling_params import SamplingParams

LONGROPE = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}


def _rope(arch="LlamaForCausalLM", **hf):
    return ropes_from_hf({"max_position_embeddings": 16, **hf}, arch)


def _hashes(num_tokens, regime=None, salt=None):
    """The hashes of the first two blocks of 8 of a prompt of ``num_tokens`` tokens 1, 2, ..."""
    seq = Sequence(0, "r", 0, list(range(1, num_tokens + 1)), SamplingParams(), max_tokens=1, rng_seed=0,
                   eos_token_ids=frozenset(), stop_token_ids=frozenset(), banned_token_ids=(),
                   want_prompt_logprobs=False, cache_salt=salt)
    return BlockManager(8, 8, True, rope_regime=regime)._hash_blocks(seq, 2)


def test_length_independent_ropes_hash_as_before():
    plain = _hashes(40)
    for hf in ({}, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
               {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}}):
        assert prefix_cache_regime(_rope(**hf)) is None
    assert _hashes(40, prefix_cache_regime(_rope())) == plain == _hashes(17)


def test_longrope_short_and_long_prompts_never_share():
    regime = prefix_cache_regime(_rope("Phi3ForCausalLM", rope_scaling=LONGROPE, max_position_embeddings=64,
                                       original_max_position_embeddings=24))
    assert [regime(n) for n in (1, 24, 25, 64)] == [0, 0, 1, 1]
    short, long = _hashes(24, regime), _hashes(25, regime)
    assert short == _hashes(17, regime) == _hashes(24)  # short prompts hash as under a plain rope
    assert long == _hashes(40, regime)  # all long prompts rotate alike: they share
    assert not set(short) & set(long)
    assert _hashes(40, regime, salt="a") != long  # the salt still keys it


def test_dynamic_ntk_long_prompts_share_only_at_equal_lengths():
    regime = prefix_cache_regime(_rope(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert [regime(n) for n in (3, 16, 17, 30)] == [0, 0, 17, 30]
    assert _hashes(16, regime) == _hashes(17) and _hashes(20, regime) == _hashes(20, regime)
    assert len({tuple(_hashes(n, regime)) for n in (16, 17, 18, 30)}) == 4


def test_two_length_dependent_ropes_key_on_both():
    longrope = _rope("Phi3ForCausalLM", rope_scaling=LONGROPE, original_max_position_embeddings=8)[0]
    dynamic = _rope(rope_scaling={"rope_type": "dynamic", "factor": 2.0})[0]
    regime = prefix_cache_regime((longrope, dynamic, None))
    assert regime(8) == 0
    assert len({regime(n) for n in (8, 9, 16, 17, 18)}) == 4  # 9 and 16: only longrope's regime (long) changed
    assert regime(9) == regime(16)
