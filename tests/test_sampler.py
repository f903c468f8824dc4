"""Sampler (jaxllm/models/sampler.py) on CPU, fed by the host-side packing (tests/test_sampling_metadata.py
checks that part alone).

References are small numpy implementations of vLLM's semantics; distributions are checked over many seeds
(each row of one big batch is a different seed) with a 5-sigma bound per token plus exact support checks."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_rows import seq, sp

from jaxllm.models import sampler as sampler_mod
from jaxllm.models.sampler import sample, token_logprobs, top_k_values
from jaxllm.runner.sampler_config import FILTER_CONFIG, FULL_CONFIG, GREEDY_CONFIG
from jaxllm.runner.sampling_metadata import build_sampling_metadata, to_runner_output

_sample = jax.jit(sample, static_argnums=2)


def run(seqs, logits, padded=None):
    logits = np.asarray(logits, np.float32)
    md, cfg = build_sampling_metadata(seqs, padded or logits.shape[0], logits.shape[1])
    return jax.device_get(_sample(jnp.asarray(logits), md, cfg)), cfg


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def np_distribution(x, temperature=1.0, min_p=0.0, top_k=0, top_p=1.0):
    """vLLM's order: temperature, min_p, top_k (ties kept), top_p (token kept iff mass strictly above <
    top_p)."""
    x = np.asarray(x, np.float64) / temperature
    p = np_softmax(x)
    x = np.where(p >= min_p * p.max(), x, -np.inf)
    if top_k > 0:
        x = np.where(x >= np.sort(x)[::-1][top_k - 1], x, -np.inf)
    p = np_softmax(x)
    keep = np.array([p[p > pi].sum() < top_p for pi in p])
    return np_softmax(np.where(keep, x, -np.inf))


def empirical(params, logits_row, n=20000, **kw):
    """Frequencies of n samples of one distribution: n rows, seeds 0..n-1."""
    seqs = [seq(params, seq_id=i, seed=i, **kw) for i in range(n)]
    out, _ = run(seqs, np.tile(logits_row, (n, 1)))
    return np.bincount(out.token_ids, minlength=len(logits_row)) / n


def assert_matches(freq, p, n=20000):
    assert np.all(freq[p == 0] == 0), f"sampled outside the support: {np.nonzero((p == 0) & (freq > 0))}"
    assert np.all(freq[p > 0.01] > 0), "a likely token was never sampled"
    bound = 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(freq - p) <= bound), (freq, p)


LOGITS = np.array([2.0, 1.5, 1.4, 1.0, 0.3, 0.0, -0.5, -1.0, -2.0, -3.0, 0.9, 1.45], np.float32)


def test_greedy_variant_is_argmax_and_carries_no_arrays():
    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32)
    seqs = [seq(sp(temperature=0.0), seq_id=i) for i in range(3)]
    md, cfg = build_sampling_metadata(seqs, 4, 50)
    assert cfg == GREEDY_CONFIG and jax.tree_util.tree_leaves(md) == []
    out, _ = run(seqs, logits)
    np.testing.assert_array_equal(out.token_ids, logits.argmax(-1))
    assert out.logprob is None


def test_allowed_bias_banned_on_greedy_rows():
    V = 40
    logits = np.random.default_rng(1).normal(size=(4, V)).astype(np.float32)
    seqs = [
        seq(sp(temperature=0.0, allowed_token_ids=[3, 17, 25]), seq_id=0),
        seq(sp(temperature=0.0, logit_bias={11: 100.0}), seq_id=1),
        seq(sp(temperature=0.0), seq_id=2, banned=[int(logits[2].argmax())]),
        # bad word [5, 6, t]: the output ends with 5, 6, so t (this row's argmax) is banned
        seq(
            sp(temperature=0.0, bad_words_token_ids=[[5, 6, int(logits[3].argmax())]]),
            seq_id=3,
            token_ids=[1, 5, 6],
            num_prompt_tokens=1,
        ),
    ]
    out, _ = run(seqs, logits)
    assert out.token_ids[0] == [3, 17, 25][int(np.argmax(logits[0, [3, 17, 25]]))]
    assert out.token_ids[1] == 11
    assert out.token_ids[2] == np.argsort(logits[2])[-2]
    assert out.token_ids[3] == np.argsort(logits[3])[-2]


def np_penalties(x, token_ids, num_prompt, rep, freq, pres):
    x = x.astype(np.float32).copy()
    outputs = collections.Counter(token_ids[num_prompt:])
    for t in set(token_ids):
        x[t] = x[t] / rep if x[t] > 0 else x[t] * rep
    for t, c in outputs.items():
        x[t] -= freq * c + pres
    return x


def test_penalties_match_numpy():
    V, rng = 30, np.random.default_rng(2)
    logits = rng.normal(size=(4, V)).astype(np.float32) * 2
    cases = [(1.5, 0.0, 0.0), (1.0, 0.7, 0.0), (1.0, 0.0, 1.3), (0.8, -0.4, 0.6)]
    seqs, refs = [], []
    for i, (rep, freq, pres) in enumerate(cases):
        ids = [int(t) for t in rng.integers(0, V, size=20)]
        seqs.append(
            seq(
                sp(temperature=0.0, repetition_penalty=rep, frequency_penalty=freq, presence_penalty=pres),
                seq_id=i,
                token_ids=ids,
                num_prompt_tokens=12,
            )
        )
        refs.append(np_penalties(logits[i], ids, 12, rep, freq, pres))
    md, _cfg = build_sampling_metadata(seqs, 4, V)
    got = jax.jit(sampler_mod._apply_processors, static_argnums=2)(jnp.asarray(logits), md, True)
    np.testing.assert_allclose(np.asarray(got), np.stack(refs), rtol=1e-6, atol=1e-6)
    out, _ = run(seqs, logits)
    np.testing.assert_array_equal(out.token_ids, np.stack(refs).argmax(-1))


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.7},
        {"temperature": 1.0, "top_k": 3},
        {"temperature": 1.3, "top_p": 0.6},
        {"temperature": 1.0, "min_p": 0.3},
        {"temperature": 0.8, "top_k": 6, "top_p": 0.7, "min_p": 0.1},
    ],
)
def test_distribution_matches_numpy(kw):
    p = np_distribution(LOGITS, **kw)
    assert_matches(empirical(sp(**kw), LOGITS), p)


def test_distribution_after_processors():
    params = {
        "temperature": 0.9,
        "top_p": 0.9,
        "logit_bias": {9: 4.0},
        "allowed_token_ids": list(range(1, 11)),
        "repetition_penalty": 1.2,
        "frequency_penalty": 0.3,
    }
    ids = [0, 1, 2, 2, 3]
    x = np_penalties(LOGITS + np.eye(len(LOGITS), dtype=np.float32)[9] * 4.0, ids, 2, 1.2, 0.3, 0.0)
    x[[0, 11]] = -np.inf
    p = np_distribution(x, temperature=0.9, top_p=0.9)
    assert_matches(empirical(sp(**params), LOGITS, token_ids=ids, num_prompt_tokens=2), p)


def test_tied_top_p_boundary_keeps_every_tied_token():
    # probabilities ~ [0.3, 0.2, 0.2, 0.2, 0.1] (other tokens -inf, the shape of LOGITS to reuse its compile):
    # with top_p=0.4 the three tied 0.2 tokens all survive; with top_p=0.25 only the first does
    logits = np.full_like(LOGITS, -np.inf)
    logits[:5] = np.log(np.array([0.3, 0.2, 0.2, 0.2, 0.1], np.float32))
    assert set(np.nonzero(empirical(sp(temperature=1.0, top_p=0.4), logits))[0]) == {0, 1, 2, 3}
    assert set(np.nonzero(empirical(sp(temperature=1.0, top_p=0.25), logits))[0]) == {0}


def test_top_k_values_blocked_is_exact():
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=(5, 3001)) * 3, 1).astype(np.float32)
    vals, ids = top_k_values(jnp.asarray(x), 20, block=16)  # 188 blocks: the two-stage path
    ref = np.sort(x, axis=1)[:, ::-1][:, :20]
    np.testing.assert_array_equal(np.asarray(vals), ref)
    np.testing.assert_array_equal(np.take_along_axis(x, np.asarray(ids), 1), ref)


def test_seeded_rows_do_not_depend_on_batch():
    V = 500
    rng = np.random.default_rng(5)
    row = rng.normal(size=V).astype(np.float32)
    target = lambda i: seq(sp(temperature=1.0, top_p=0.95, seed=123), seq_id=99, seed=123, output_index=7)
    others = lambda n: [
        seq(sp(temperature=float(t), top_k=10), seq_id=i, seed=1000 + i)
        for i, t in zip(range(n), rng.uniform(0.0, 2.0, n))
    ]
    tokens = set()
    for n_before, n_after, padded in [(0, 0, 1), (3, 2, 8), (6, 0, 16), (1, 9, 16)]:
        seqs = others(n_before) + [target(0)] + others(n_after)
        logits = rng.normal(size=(padded, V)).astype(np.float32)
        logits[n_before] = row
        out, _ = run(seqs, logits, padded)
        tokens.add(int(out.token_ids[n_before]))
    assert len(tokens) == 1
    # the stream moves with output_index
    draws = {
        int(run([seq(sp(temperature=1.0), seed=123, output_index=j)], row[None])[0].token_ids[0])
        for j in range(20)
    }
    assert len(draws) > 1


def test_logprobs_and_rank_from_raw_logits():
    rng = np.random.default_rng(6)
    V = 200
    logits = rng.normal(size=(3, V)).astype(np.float32) * 3
    seqs = [
        seq(sp(temperature=0.0, logprobs=5, logit_bias={7: 50.0}), seq_id=10),
        seq(sp(temperature=1.0, logprobs=0), seq_id=11, seed=3),
        seq(sp(temperature=0.0), seq_id=12),
    ]
    out, _cfg = run(seqs, logits)
    ref = jax.nn.log_softmax(jnp.asarray(logits.astype(np.float64)), axis=-1)
    ref = np.asarray(ref)
    assert out.token_ids[0] == 7  # the bias moved the sample, not the (raw) logprobs
    for i in range(3):
        t = out.token_ids[i]
        np.testing.assert_allclose(out.logprob[i], ref[i, t], rtol=1e-5, atol=1e-5)
        assert out.rank[i] == 1 + np.sum(ref[i] > ref[i, t])
        np.testing.assert_array_equal(out.top_ids[i], np.argsort(-ref[i])[:20])
        np.testing.assert_allclose(out.top_logprobs[i], np.sort(ref[i])[::-1][:20], rtol=1e-5, atol=1e-5)
    res = to_runner_output(seqs, out)
    assert res.sampled == {10: 7, 11: int(out.token_ids[1]), 12: int(out.token_ids[2])}
    assert set(res.logprobs) == {10, 11}
    assert (
        res.logprobs[10].token_id == 7
        and res.logprobs[10].rank == out.rank[0]
        and len(res.logprobs[10].top) == 5
    )
    assert res.logprobs[10].top[0] == (int(out.top_ids[0, 0]), pytest.approx(float(out.top_logprobs[0, 0])))
    assert res.logprobs[11].top == []


def test_token_logprobs_helper():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 50)).astype(np.float32)
    logits[0, :3] = 5.0  # ties: vLLM's rank counts every logprob >= the token's (tied ones rank ahead)
    targets = np.array([1, 2, 3, 4, 5, 6], np.int32)
    lp, rank, ids, top = jax.jit(token_logprobs, static_argnums=2)(
        jnp.asarray(logits), jnp.asarray(targets), 4
    )
    ref = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), -1))
    np.testing.assert_allclose(lp, ref[np.arange(6), targets], rtol=1e-6)
    np.testing.assert_array_equal(rank, [np.sum(ref[i] >= ref[i, t]) for i, t in enumerate(targets)])
    assert rank[0] == 3 and ids.shape == (6, 4) and top.shape == (6, 4)
    assert token_logprobs(jnp.asarray(logits), jnp.asarray(targets), 0)[2].shape == (6, 0)


def test_large_vocab_full_variant_smoke():
    V, S = 151936, 8
    rng = np.random.default_rng(8)
    logits = (rng.normal(size=(S, V)) * 4).astype(np.float32)
    seqs = [
        seq(sp(temperature=0.0, logprobs=3), seq_id=0),
        seq(sp(temperature=0.8, top_k=50, top_p=0.9), seq_id=1, seed=1),
        seq(sp(temperature=1.0, top_p=0.95), seq_id=2, seed=2),  # nucleus far beyond 64: fallback path
        seq(sp(temperature=1.0, top_k=1000), seq_id=3, seed=3),  # k beyond the fast path
        seq(sp(temperature=0.6, min_p=0.1, logit_bias={5: 60.0}), seq_id=4, seed=4),
        seq(sp(temperature=1.0, allowed_token_ids=[10, 20, 30]), seq_id=5, seed=5),
    ]
    out, cfg = run(seqs, logits, S)
    assert cfg == FULL_CONFIG
    t = out.token_ids
    assert t[0] == logits[0].argmax()
    assert logits[1, t[1]] >= np.sort(logits[1])[-50]
    assert logits[3, t[3]] >= np.sort(logits[3])[-1000]
    assert t[4] == 5 and t[5] in (10, 20, 30)
    np.testing.assert_array_equal(out.top_ids[0, :3], np.argsort(-logits[0])[:3])


def test_noise_is_uniform_and_independent_across_steps():
    # one seed, output_index 0..n-1 on uniform logits: marginal and consecutive-pair counts are uniform
    V, n = 16, 20000
    seqs = [seq(sp(temperature=1.0), seq_id=j, seed=7, output_index=j) for j in range(n)]
    t = run(seqs, np.zeros((n, V), np.float32))[0].token_ids
    marginal = np.bincount(t, minlength=V)
    pairs = np.bincount(t[:-1] * V + t[1:], minlength=V * V)
    chi2 = lambda c: float(np.sum((c - c.mean()) ** 2 / c.mean()))
    assert chi2(marginal) < 45.0  # df = 15: p ~ 1e-4
    assert chi2(pairs) < 360.0  # df = 255: p ~ 1e-4


@pytest.mark.parametrize("fields", [{"top_k": 20, "top_p": 0.8}, {"top_k": 5, "min_p": 0.1}, {"top_p": 0.9},
                                    {"min_p": 0.05}, {"top_p": 0.9, "min_p": 0.1}])
def test_seeded_rows_do_not_depend_on_the_variant(fields):
    """A batch using one filter runs its own variant (TOP_K / TOP_P / MIN_P / TOP_P_MIN_P_CONFIG), one with other
    rows the all-filters one (or one with logprobs): the same seeded row gets the same token in each, on
    tie-heavy logits."""
    V, S = 3000, 24
    rng = np.random.default_rng(21)
    logits = np.round(rng.normal(size=(S, V)) * 3).astype(np.float32)  # many ties
    seqs = [seq(sp(temperature=float(t), seed=s, **fields), seq_id=s, seed=s, output_index=3)
            for s, t in enumerate(rng.choice([0.0, 0.5, 1.0, 1.5], S))]
    md, own = build_sampling_metadata(seqs, S, V)
    assert own != FILTER_CONFIG
    tokens = [np.asarray(_sample(jnp.asarray(logits), md, cfg).token_ids) for cfg in (own, FILTER_CONFIG, FULL_CONFIG)]
    np.testing.assert_array_equal(tokens[0], tokens[1])
    np.testing.assert_array_equal(tokens[0], tokens[2])
