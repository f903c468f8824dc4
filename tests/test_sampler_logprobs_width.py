"""Logprobs beyond vLLM's default 20 (``LLM(max_logprobs=...)``) and -1 (the whole vocabulary): the static
width of the sampler's top-k (``logprobs_width``), the values against a numpy reference, and the host side."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_rows import seq, sp

from jaxllm.models.sampler import sample
from jaxllm.runner.sampler_config import FULL_CONFIG, SamplerConfig, covers, logprobs_width
from jaxllm.runner.sampling_metadata import build_sampling_metadata, to_runner_output

V = 96
_sample = jax.jit(sample, static_argnums=2)


def test_width_ladder():
    assert logprobs_width(None, V) == 0
    assert logprobs_width(0, V) == logprobs_width(20, V) == 20  # the start-up FULL_CONFIG
    assert logprobs_width(21, V, max_logprobs=50) == logprobs_width(50, V, max_logprobs=50) == 50
    assert logprobs_width(30, V, max_logprobs=500) == V  # never above the vocabulary
    assert logprobs_width(-1, V, max_logprobs=-1) == logprobs_width(25, V, max_logprobs=-1) == V
    assert logprobs_width(5, V, max_logprobs=-1) == 20  # small requests keep the cheap program
    with pytest.raises(ValueError, match="num_logprobs=-1"):
        SamplerConfig(greedy_only=False, bias_width=8, allowed_width=8, banned_width=8, num_logprobs=-1)


def test_config_follows_the_largest_request():
    _, cfg = build_sampling_metadata([seq(sp(temperature=0.0, logprobs=3))], 2, V, max_logprobs=-1)
    assert cfg.num_logprobs == 20
    rows = [seq(sp(temperature=0.0, logprobs=3)), seq(sp(temperature=0.0, logprobs=40), seq_id=1)]
    _, cfg = build_sampling_metadata(rows, 2, V, max_logprobs=64)
    assert cfg.num_logprobs == 64
    _, full = build_sampling_metadata([seq(sp(temperature=0.0, logprobs=-1))], 2, V, max_logprobs=-1)
    assert full.num_logprobs == V and covers(full, cfg) and not covers(cfg, full)  # the wider serves the narrower
    assert not covers(FULL_CONFIG, full)


def _reference(logits):
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits.astype(np.float64)), axis=-1))


def test_values_ranks_and_sampled_token_match_the_reference():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(4, V)) * 3).astype(np.float32)
    rows = [
        seq(sp(temperature=0.0, logprobs=-1), seq_id=0),
        seq(sp(temperature=1.0, logprobs=45), seq_id=1, seed=5),
        seq(sp(temperature=0.0, logprobs=2, logit_bias={9: 80.0}), seq_id=2),
        seq(sp(temperature=0.0), seq_id=3),
    ]
    md, cfg = build_sampling_metadata(rows, 4, V, max_logprobs=-1)
    assert cfg.num_logprobs == V
    out = jax.device_get(_sample(jnp.asarray(logits), md, cfg))
    ref = _reference(logits)
    for i in range(4):
        t = out.token_ids[i]
        np.testing.assert_allclose(out.logprob[i], ref[i, t], rtol=1e-5, atol=1e-5)
        assert out.rank[i] == 1 + np.sum(ref[i] > ref[i, t])
        np.testing.assert_array_equal(out.top_ids[i], np.argsort(-ref[i]))
        np.testing.assert_allclose(out.top_logprobs[i], np.sort(ref[i])[::-1], rtol=1e-5, atol=1e-5)
    assert out.token_ids[2] == 9  # the bias moves the sample, not the raw logprobs
    res = to_runner_output(rows, out)
    assert [len(res.logprobs[i].top) for i in range(3)] == [V, 45, 2] and 3 not in res.logprobs
    assert dict(res.logprobs[0].top) == pytest.approx({t: ref[0, t] for t in range(V)}, abs=1e-5)
    assert res.logprobs[2].token_id == 9 and res.logprobs[2].rank == out.rank[2]

