"""Structured outputs without a model: the API objects' validation (vLLM's rules and messages), the grammar
cache, the on-device bitmask against its numpy reference, and the sampler variant that carries it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from engine.bpe_tokenizer import bpe_tokenizer

from jaxllm.engine.batch import ScheduledSeq
from jaxllm.engine_args import EngineArgs
from jaxllm.models.sampler import apply_grammar_bitmask, apply_grammar_bitmask_reference, sample
from jaxllm.runner.sampler_config import covers
from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.sampling_params import SamplingParams
from jaxllm.structured_outputs import GuidedDecodingParams, StructuredOutputsConfig, StructuredOutputsParams
from jaxllm.structured_outputs.grammar import GrammarCompiler


def test_exactly_one_constraint_kind():
    with pytest.raises(ValueError, match="You must use one kind of structured outputs constraint but none"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="only use one kind of structured outputs constraint but multiple"):
        StructuredOutputsParams(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="only use one kind of structured outputs constraint but multiple"):
        StructuredOutputsParams(json={"type": "object"}, json_object=False)  # vLLM counts "is not None"
    assert StructuredOutputsParams(structural_tag="{}").kind == "structural_tag"
    with pytest.raises(TypeError, match="choice must be a list of str"):
        StructuredOutputsParams(choice="abc")
    with pytest.raises(ValueError, match="non-empty list of str"):
        StructuredOutputsParams(choice=["a", 3])
    with pytest.raises(TypeError, match="json must be a JSON schema"):
        StructuredOutputsParams(json=3)
    assert StructuredOutputsParams(json_object=True).kind == "json_object"
    assert StructuredOutputsParams.from_optional() is None
    assert StructuredOutputsParams.from_optional(regex="x").kind == "regex"


def test_guided_decoding_is_the_older_name():
    with pytest.warns(DeprecationWarning):
        g = GuidedDecodingParams(choice=["yes", "no"])
    assert isinstance(g, StructuredOutputsParams)
    with pytest.warns(DeprecationWarning, match="guided_decoding is deprecated"):
        sp = SamplingParams(guided_decoding=g)
    assert sp.structured_outputs is g and sp.guided_decoding is None
    with pytest.raises(TypeError, match="structured_outputs must be a StructuredOutputsParams"):
        SamplingParams(structured_outputs={"regex": "a"})


def test_structured_outputs_config_keyword():
    assert StructuredOutputsConfig.coerce(EngineArgs.from_kwargs({}).structured_outputs_config).backend == "auto"
    args = EngineArgs.from_kwargs({"structured_outputs_config": {"backend": "guidance"}})
    assert StructuredOutputsConfig.coerce(args.structured_outputs_config) == StructuredOutputsConfig("guidance")
    with pytest.raises(ValueError, match="backend='xgrammar' is a vLLM backend jaxllm does not implement"):
        EngineArgs.from_kwargs({"structured_outputs_config": {"backend": "xgrammar"}})
    with pytest.raises(ValueError, match="backend='nope' is unknown"):
        StructuredOutputsConfig(backend="nope")
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['speed'\]"):
        StructuredOutputsConfig.coerce({"speed": 1})
    with pytest.raises(ValueError, match="reasoning_parser"):
        StructuredOutputsConfig(reasoning_parser="deepseek_r1")


def test_grammars_are_compiled_once_per_spec_and_evicted_lru():
    comp = GrammarCompiler(bpe_tokenizer(), 448, (0,), cache_size=2)
    a1 = comp.new_state("r", StructuredOutputsParams(json={"type": "object", "properties": {"a": {"type": "integer"}}}))
    a2 = comp.new_state("r", StructuredOutputsParams(json='{"properties": {"a": {"type": "integer"}}, "type": "object"}'))
    assert a1._future is a2._future  # the same schema as a dict or a string (any key order)
    comp.new_state("r", StructuredOutputsParams(regex="a+"))
    comp.new_state("r", StructuredOutputsParams(regex="b+"))
    assert len(comp._cache) == 2 and a1._future not in comp._cache.values()
    a1.wait()
    assert a1.ready() and a1.matcher is not a2.matcher  # each sequence its own matcher
    masks = np.zeros((2, comp.num_words), np.int32)
    comp.fill_bitmasks([a1, a2], masks)
    allowed = np.flatnonzero(((masks[0][:, None] >> np.arange(32)) & 1).reshape(-1))
    assert set(allowed) <= {t for t in range(448) if bpe_tokenizer().decode([t]).strip().startswith("{")} | {0}
    assert np.array_equal(masks[0], masks[1])


def test_bitmask_matches_reference():
    rng = np.random.default_rng(0)
    s, v = 5, 70  # v not a multiple of 32: the last word's high bits are padding
    logits = rng.normal(size=(s, v)).astype(np.float32)
    bits = rng.integers(0, 2, size=(s, 96))
    bits[2] = 1  # an unconstrained row
    words = np.packbits(bits.reshape(s, 3, 32)[:, :, ::-1], axis=-1).view(">u4").astype(np.uint32)
    mask = words.reshape(s, 3).view(np.int32)
    out = np.asarray(apply_grammar_bitmask(jnp.asarray(logits), jnp.asarray(mask)))
    np.testing.assert_array_equal(out, apply_grammar_bitmask_reference(logits, mask))
    assert np.isneginf(out[bits[:, :v] == 0]).all() and np.array_equal(out[2], logits[2])


def _row(i, bitmask, temperature=0.0):
    return ScheduledSeq(seq_id=i, token_ids=[1, 2], start=0, num_new_tokens=2, block_table=[0],
                        num_prompt_tokens=2, sampling_params=SamplingParams(temperature=temperature),
                        sample=True, output_index=0, rng_seed=i, grammar_bitmask=bitmask)


def test_sampler_variant_only_for_batches_with_constrained_rows():
    v = 64
    _, plain = build_sampling_metadata([_row(0, None), _row(1, None)], 4, v)
    assert plain.greedy_only and not plain.grammar_words
    only_7 = np.zeros(2, np.int32)
    only_7[0] = 1 << 7
    md, cfg = build_sampling_metadata([_row(0, only_7), _row(1, None, temperature=0.7)], 4, v)
    assert cfg.grammar_words == 2 and not cfg.greedy_only and not covers(plain, cfg)
    assert (md.grammar_bitmask[1:] == -1).all()  # unconstrained and padding rows allow everything
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, v)), jnp.float32)
    tokens = np.asarray(sample(logits, md, cfg).token_ids)
    assert tokens[0] == 7


def test_gumbel_noise_is_finite_so_masked_tokens_are_never_sampled():
    """The uniform of the Gumbel noise must stay below 1 in float32: a +inf noise on a masked (-inf) token
    makes a NaN that argmax picks. ~0.9% of [V = 151936] rows hit the top 24-bit value."""
    from jaxllm.models.sampler import _gumbel_argmax

    s, v = 64, 151936
    x = jnp.full((s, v), -jnp.inf).at[:, 7].set(0.0).at[:, 1000].set(0.5)
    seeds = jnp.stack([jnp.zeros(s, jnp.uint32), jnp.arange(s, dtype=jnp.uint32)], axis=1)
    for index in range(8):
        tokens = np.asarray(_gumbel_argmax(x, seeds, jnp.full(s, index, jnp.int32), jnp.ones(s, bool)))
        assert set(tokens.tolist()) <= {7, 1000}, (index, sorted(set(tokens.tolist()) - {7, 1000}))
