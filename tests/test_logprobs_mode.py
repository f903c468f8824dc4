"""vLLM's ``logprobs_mode`` in the sampler (jaxllm/models/sampler_logprobs.py) against a numpy reference of vLLM's
order: raw logits -> allowed ids, banned ids, logit_bias, penalties -> temperature (1 on greedy rows) -> min_p,
top-k, top-p (removed tokens at -inf) -> log_softmax for the ``*_logprobs`` modes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_rows import seq, sp

from jaxllm.engine_args import LOGPROBS_MODES, EngineArgs
from jaxllm.models.sampler import sample
from jaxllm.models.sampler_logprobs import MODES, prompt_token_logprobs
from jaxllm.runner.sampler_config import (
    FULL_CONFIG,
    SAMPLE_CONFIG,
    STARTUP_CONFIGS,
    SamplerConfig,
    covers,
    start_up_cover,
    startup_configs,
)
from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.spec_decode.rejection import processed_probs, sample_and_verify

V = 64
PROMPT = (1, 2, 3, 2)
OUTPUT = (7, 7, 9)
_sample = jax.jit(sample, static_argnums=2)


def rows():
    """(SamplingParams stand-in, seed) of one batch mixing greedy and random rows and every processing step."""
    return [
        (sp(temperature=0.7, top_k=5, logprobs=8), 1),  # more entries asked than survivors: -inf entries
        (sp(temperature=1.3, top_p=0.6, logprobs=3), 2),
        (sp(temperature=0.0, logit_bias={4: 2.5, 5: -1.0}, logprobs=4), 3),  # greedy: temperature 1, no filter
        (sp(temperature=0.9, min_p=0.1, presence_penalty=0.7, repetition_penalty=1.4, logprobs=2), 4),
        (sp(temperature=1.1, top_k=10, top_p=0.8, min_p=0.05, allowed_token_ids=list(range(3, 40)),
            frequency_penalty=0.3, logprobs=5), 5),
        (sp(temperature=1.0), 6),  # no logprobs
    ]


def batch(banned_row=2, banned=(0, 1)):
    return [seq(p, seq_id=i, seed=s, token_ids=PROMPT + OUTPUT, num_prompt_tokens=len(PROMPT), output_index=3,
                banned=banned if i == banned_row else ()) for i, (p, s) in enumerate(rows())]


def processed_reference(raw, p, banned=()):
    """One row's processed logits (float64) as vLLM computes them."""
    x = np.array(raw, np.float64)
    if getattr(p, "allowed_token_ids", None):
        x = np.where(np.isin(np.arange(V), p.allowed_token_ids), x, -np.inf)
    x[list(banned)] = -np.inf
    for t, b in (getattr(p, "logit_bias", None) or {}).items():
        x[t] += b
    rep = getattr(p, "repetition_penalty", 1.0)
    seen = np.isin(np.arange(V), PROMPT + OUTPUT)
    x = np.where(seen, np.where(x > 0, x / rep, x * rep), x)
    counts = np.bincount(OUTPUT, minlength=V)
    x = x - getattr(p, "frequency_penalty", 0.0) * counts - getattr(p, "presence_penalty", 0.0) * (counts > 0)
    if p.temperature < 1e-5:
        return x
    x = x / p.temperature
    probs = np.exp(x - x.max())
    x = np.where(probs >= getattr(p, "min_p", 0.0) * probs.max(), x, -np.inf)
    if getattr(p, "top_k", 0):
        x = np.where(x >= np.sort(x)[::-1][p.top_k - 1], x, -np.inf)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    keep = np.array([probs[probs > q].sum() < getattr(p, "top_p", 1.0) for q in probs])
    return np.where(keep, x, -np.inf)


def reference(raw, p, mode, banned=()):
    processed, normalize = MODES[mode]
    x = processed_reference(raw, p, banned) if processed else np.asarray(raw, np.float64)
    if normalize:
        m = x[np.isfinite(x)].max()
        x = x - (m + np.log(np.exp(x - m).sum()))
    return x


def assert_row(out, i, want, num):
    token = int(out.token_ids[i])
    assert np.isfinite(want[token])  # the sampled token is a survivor
    np.testing.assert_allclose(out.logprob[i], want[token], rtol=1e-5, atol=1e-5)
    assert out.rank[i] == 1 + int((want > want[token]).sum())
    vals, ids = out.top_logprobs[i, :num], out.top_ids[i, :num]
    np.testing.assert_allclose(vals, np.sort(want)[::-1][:num], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want[ids], vals, rtol=1e-5, atol=1e-5)  # each id carries its own value


def test_every_mode_is_a_settings_choice():
    assert set(LOGPROBS_MODES) == set(MODES)
    for mode in LOGPROBS_MODES:
        assert EngineArgs.from_kwargs({"logprobs_mode": mode}).logprobs_mode == mode
    with pytest.raises(ValueError, match="logprobs_mode='processed'"):
        EngineArgs.from_kwargs({"logprobs_mode": "processed"})


def test_modes_match_the_reference_and_never_change_the_tokens():
    raw = np.random.default_rng(0).normal(scale=2.0, size=(8, V)).astype(np.float32)
    tokens = None
    for mode in LOGPROBS_MODES:
        md, cfg = build_sampling_metadata(batch(), 8, V, logprobs_mode=mode)
        assert cfg.num_logprobs and cfg.top_k and cfg.min_p and cfg.penalty_len and cfg.logprobs_mode == mode
        out = jax.device_get(_sample(jnp.asarray(raw), md, cfg))
        if tokens is None:
            tokens = out.token_ids
        np.testing.assert_array_equal(out.token_ids, tokens)  # the mode changes what is reported only
        for i, (p, _) in enumerate(rows()):
            if getattr(p, "logprobs", None) is not None:
                assert_row(out, i, reference(raw[i], p, mode, (0, 1) if i == 2 else ()), p.logprobs)
        if mode.startswith("processed"):
            assert np.isneginf(out.top_logprobs[0, 5:8]).all()  # top_k=5: the rest are removed
    assert not (np.asarray(tokens[:6]) == np.argmax(raw[:6], -1)).all()  # the processing chose other tokens


def test_all_greedy_batch_reports_the_processed_logits_unscaled():
    raw = np.random.default_rng(1).normal(size=(2, V)).astype(np.float32)
    p = sp(temperature=0.0, logit_bias={9: 4.0}, repetition_penalty=2.0, logprobs=3)
    seqs = [seq(p, seq_id=i, token_ids=PROMPT + OUTPUT, num_prompt_tokens=len(PROMPT)) for i in range(2)]
    for mode in LOGPROBS_MODES:
        md, cfg = build_sampling_metadata(seqs, 2, V, logprobs_mode=mode)
        assert not cfg.random
        out = jax.device_get(_sample(jnp.asarray(raw), md, cfg))
        for i in range(2):
            assert_row(out, i, reference(raw[i], p, mode), 3)
        assert int(out.token_ids[0]) == 9


@pytest.mark.parametrize("mode", LOGPROBS_MODES)
def test_prompt_logprobs_see_no_sampling_parameter(mode):
    """vLLM: prompt tokens go through no processor, so raw_* and processed_* agree: log_softmax of the raw
    logits for the *_logprobs modes, the raw logits for the *_logits modes."""
    logits = np.random.default_rng(2).normal(size=(5, V)).astype(np.float32)
    targets = np.array([3, 0, 63, 7, 7], np.int32)
    lp, rank, ids, top = jax.device_get(prompt_token_logprobs(jnp.asarray(logits), jnp.asarray(targets), 4, mode))
    for i in range(5):
        want = reference(logits[i], sp(), "raw_" + mode.split("_")[1], ())
        np.testing.assert_allclose(lp[i], want[targets[i]], rtol=1e-5, atol=1e-5)
        assert rank[i] == 1 + int((want > want[targets[i]]).sum())
        np.testing.assert_allclose(top[i], np.sort(want)[::-1][:4], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ids[i], np.argsort(-want, kind="stable")[:4])


def test_speculative_verification_reports_the_mode_of_the_emitted_token():
    """Sampled drafts (``sample_and_verify``): the emitted token may be a residual draw, not the plain
    sampler's; its processed value is still the one reported."""
    rng = np.random.default_rng(3)
    raw = rng.normal(scale=2.0, size=(8, V)).astype(np.float32)
    md, _ = build_sampling_metadata(batch(), 8, V)
    draft_logits = jnp.asarray(rng.normal(scale=2.0, size=(8, V)).astype(np.float32))
    q = processed_probs(draft_logits, md.temperature, md.top_k, md.top_p, md.min_p)
    draft = np.asarray(jnp.argmax(q, axis=-1), np.int32)
    q_index = np.where(np.asarray(md.greedy), -1, np.arange(8)).astype(np.int32)
    for mode in ("processed_logprobs", "processed_logits", "raw_logits"):
        cfg = build_sampling_metadata(batch(), 8, V, logprobs_mode=mode)[1]
        out = jax.device_get(jax.jit(sample_and_verify, static_argnums=2)(
            jnp.asarray(raw), md, cfg, jnp.asarray(draft), jnp.asarray(q_index), (q,)))
        for i, (p, _) in enumerate(rows()):
            if getattr(p, "logprobs", None) is not None:
                assert_row(out, i, reference(raw[i], p, mode, (0, 1) if i == 2 else ()), p.logprobs)


def test_variants_carry_the_mode_with_logprobs_only():
    """A step without logprobs builds the same variant in every engine; with them, only a variant of the same
    mode serves it, and under a processed mode only one with the same filters (the mask's sort runs only when
    a row filters)."""
    plain = [seq(sp(temperature=0.8))]
    assert build_sampling_metadata(plain, 2, V, logprobs_mode="processed_logits")[1] == SAMPLE_CONFIG
    with pytest.raises(ValueError, match="needs num_logprobs"):
        SamplerConfig(greedy_only=False, bias_width=8, allowed_width=8, banned_width=8, logprobs_mode="raw_logits")
    asks = [seq(sp(temperature=0.8, logprobs=1))]
    raw = build_sampling_metadata(asks, 2, V)[1]
    assert covers(FULL_CONFIG, raw)
    for mode in ("raw_logits", "processed_logprobs"):
        cfg = build_sampling_metadata(asks, 2, V, logprobs_mode=mode)[1]
        assert not covers(FULL_CONFIG, cfg)
        wider = SamplerConfig(**{**FULL_CONFIG.__dict__, "logprobs_mode": mode})
        assert covers(wider, cfg) == (mode == "raw_logits")
        assert covers(cfg, dataclasses.replace(SAMPLE_CONFIG))  # unused logprobs of any mode are neutral


@pytest.mark.parametrize("mode", LOGPROBS_MODES)
def test_start_up_set_serves_the_modes_logprobs_steps(mode):
    """The start-up logprobs variant carries the engine's mode: a logprobs step of greedy or temperature rows
    runs a start-up program (no compile during generate); under a processed mode a step with filters compiles
    its own variant (its exact mask costs a sort per row, which other steps do not pay)."""
    configs = startup_configs(mode)
    assert len(configs) == len(STARTUP_CONFIGS)
    assert [c for c in configs if not c.num_logprobs] == [c for c in STARTUP_CONFIGS if not c.num_logprobs]
    plain = build_sampling_metadata([seq(sp(temperature=0.8, logprobs=2)), seq(sp(temperature=0.0))], 2, V,
                                    logprobs_mode=mode)[1]
    assert start_up_cover(plain, mode) in configs
    filtered = build_sampling_metadata([seq(sp(temperature=0.8, top_k=5, logprobs=2))], 2, V,
                                       logprobs_mode=mode)[1]
    assert (start_up_cover(filtered, mode) in configs) == (not mode.startswith("processed"))
