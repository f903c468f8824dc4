"""Sampled drafts (jaxllm/spec_decode/rejection.py) on CPU: drafts drawn from the draft's processed law q
(``draft_tokens``) and verified by ``sample_and_verify`` + ``accepted_rows`` emit exactly the law of standard
speculative sampling (accept x with min(1, p(x)/q(x)), else draw from norm(max(0, p - q)), bonus from p), whose
first token is distributed as p: checked over many seeds against the exact law, at temperature 1 and with
top_p < 1; the textbook reference with a non-one-hot q against the same law; seeded rows reproducible."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
from sampler_rows import seq, sp
from test_sampler import np_distribution
from test_spec_decode_sampler import LOGITS, V

from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.runner.spec_rows import spec_arrays
from jaxllm.spec_decode.rejection import (
    accepted_rows,
    draft_tokens,
    processed_probs,
    rejection_sample_reference,
    sample_and_verify,
)

Q_LOGITS = np.array([[1.0, 2.0, 0.2, 1.2, 0.3, -1.0, 0.0, -0.5, 0.4, -2.0, 0.1, 0.5],
                     [0.0, 1.0, -0.5, 0.4, 2.5, 0.2, 0.3, -1.0, 0.6, 0.9, 0.0, -0.3]], np.float32)
N = 6000


def sampled_law(params):
    """Exact probability of each emitted tuple with two drafts drawn from q0, q1 (fixed here, whatever the
    context): accepted prefix mass min(p, q), a rejection at j emits max(0, p_j - q_j), all accepted the bonus."""
    p = [np_distribution(row, **params) for row in LOGITS]
    q = [np_distribution(row, **params) for row in Q_LOGITS]
    law = {}
    for a in range(V):
        law[(a,)] = max(0.0, p[0][a] - q[0][a])
        for b in range(V):
            acc_a = min(p[0][a], q[0][a])
            law[(a, b)] = acc_a * max(0.0, p[1][b] - q[1][b])
            for c in range(V):
                law[(a, b, c)] = acc_a * min(p[1][b], q[1][b]) * p[2][c]
    return {k: v for k, v in law.items() if v > 0}


def assert_law(counts, law, n=N):
    """Every emitted tuple has probability > 0; each tuple's frequency within 5 sigma of its probability, plus
    3 / n (about 1500 tuples, most with expected counts far below 1: one stray draw is not an error); and the
    chi-square statistic over the tuples expected at least 5 times stays below a 1e-4 tail bound."""
    for outcome in counts:
        assert law.get(outcome, 0) > 0, f"emitted {outcome}, which has probability 0"
    for outcome, p in law.items():
        freq = counts.get(outcome, 0) / n
        assert abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 3 / n, (outcome, freq, p)
    big = [o for o, p in law.items() if p * n >= 5]
    rest_p = 1 - sum(law[o] for o in big)
    rest_c = n - sum(counts.get(o, 0) for o in big)
    chi2 = sum((counts.get(o, 0) - n * law[o]) ** 2 / (n * law[o]) for o in big)
    chi2 += (rest_c - n * rest_p) ** 2 / max(n * rest_p, 1e-9)
    dof = len(big)
    assert chi2 < dof + 4.3 * np.sqrt(2 * dof) + 10, (chi2, dof)  # ~1e-4 tail of chi2(dof)


def md_args(params, n, output_index):
    """The draft step's per-row arrays for n rows of ``params`` (seeds 0..n-1)."""
    rows = [seq(sp(**params), seq_id=i, seed=i, output_index=output_index) for i in range(n)]
    md, _ = build_sampling_metadata(rows, n, V)
    return [jnp.asarray(a) for a in (md.temperature, md.top_k, md.top_p, md.min_p, md.greedy, md.seeds,
                                     md.output_index)]


def sampled_path(params, n=N, seed_offset=0):
    """n sequences (seeds seed_offset..): drafts from the draft rows, then verification of 3 rows each."""
    drafts, qs = [], []
    for j in range(2):
        args = md_args(params, n, j)
        args[5] = args[5].at[:, 1].add(seed_offset)
        tokens, q = jax.jit(draft_tokens)(jnp.asarray(np.tile(Q_LOGITS[j], (n, 1))), *args)
        drafts.append(np.asarray(tokens))
        qs.append(q)
    base, seqs = [3, 4], []
    for i in range(n):
        d = (int(drafts[0][i]), int(drafts[1][i]))
        s = seq(sp(**params), seq_id=i, seed=i + seed_offset, token_ids=base, output_index=0)
        s.draft_token_ids = d
        s.spec_rows = tuple(seq(sp(**params), seq_id=i, seed=i + seed_offset, token_ids=base + list(d[:j]),
                                num_prompt_tokens=2, output_index=j) for j in range(3))
        seqs.append(s)
    rows = [r for s in seqs for r in s.sampling_rows()]
    md, cfg = build_sampling_metadata(rows, len(rows), V)
    arrays = spec_arrays(seqs, len(rows), {i: i for i in range(n)}, n)
    verify = jax.jit(sample_and_verify, static_argnums=2)
    out = verify(jnp.asarray(np.tile(LOGITS, (n, 1))), md, cfg, jnp.asarray(arrays[0]), jnp.asarray(arrays[2]),
                 tuple(qs))
    valid = np.asarray(accepted_rows(out.token_ids, jnp.asarray(arrays[0]), jnp.asarray(arrays[1])))
    tokens, valid = np.asarray(out.token_ids).reshape(n, 3), valid.reshape(n, 3)
    return collections.Counter(tuple(tokens[i][valid[i]].tolist()) for i in range(n))


def test_sampled_drafts_emit_the_speculative_sampling_law():
    for params in ({"temperature": 1.0}, {"temperature": 0.9, "top_p": 0.8}, {"temperature": 1.2, "top_k": 5,
                                                                                "min_p": 0.05}):
        counts = sampled_path(params)
        assert_law(counts, sampled_law(params))
        first = collections.Counter(t[0] for t in counts.elements())
        p0 = np_distribution(LOGITS[0], **params)
        assert 0.5 * sum(abs(first[t] / N - p0[t]) for t in range(V)) < 0.03  # first token ~ p, not q


def test_drafts_follow_q_and_processed_probs_match_the_sampler_law():
    params = {"temperature": 0.8, "top_p": 0.9, "top_k": 8}
    args = md_args(params, N, 0)
    tokens, q = jax.jit(draft_tokens)(jnp.asarray(np.tile(Q_LOGITS[0], (N, 1))), *args)
    want = np_distribution(Q_LOGITS[0], **params)
    np.testing.assert_allclose(np.asarray(q[0]), want, atol=1e-6)
    freq = np.bincount(np.asarray(tokens), minlength=V) / N
    assert np.all(freq[want == 0] == 0)
    assert np.all(np.abs(freq - want) <= 5 * np.sqrt(want * (1 - want) / N) + 1e-12)
    p = processed_probs(jnp.asarray(LOGITS), *[jnp.full(3, v, d) for v, d in ((0.8, jnp.float32), (8, jnp.int32),
                                                                            (0.9, jnp.float32), (0.0, jnp.float32))])
    np.testing.assert_allclose(np.asarray(p), [np_distribution(r, **params) for r in LOGITS], atol=1e-6)
    # no row with top-k / top-p: the variant without the sort gives the same law (min_p kept)
    off = [jnp.full(3, v, d) for v, d in ((1.3, jnp.float32), (V, jnp.int32), (1.0, jnp.float32), (0.1, jnp.float32))]
    np.testing.assert_allclose(np.asarray(processed_probs(jnp.asarray(LOGITS), *off, top_k_top_p=False)),
                               [np_distribution(r, temperature=1.3, min_p=0.1) for r in LOGITS], atol=1e-6)


def test_seeded_rows_are_reproducible_and_seeds_matter():
    params = {"temperature": 1.0}
    a, b = sampled_path(params, n=64), sampled_path(params, n=64)
    assert a == b
    assert sampled_path(params, n=64, seed_offset=1000) != a


def test_reference_with_a_sampled_draft_emits_the_same_law():
    params = {"temperature": 1.0, "top_p": 0.8}
    probs = jnp.asarray(np.stack([np_distribution(row, **params) for row in LOGITS]), jnp.float32)
    q = jnp.asarray(np.stack([np_distribution(row, **params) for row in Q_LOGITS]), jnp.float32)

    def one(key):
        k_draft, k_rule = jax.random.split(key)
        drafts = jax.random.categorical(k_draft, jnp.log(q)).astype(jnp.int32)
        return rejection_sample_reference(k_rule, probs, drafts, q)

    tokens, num = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), N))
    tokens, num = np.asarray(tokens), np.asarray(num)
    assert_law(collections.Counter(tuple(tokens[i, :num[i]].tolist()) for i in range(N)), sampled_law(params))


def test_draft_rows_pack_the_requests_sampling_parameters():
    """The draft step's rows, one int32 buffer: each request's processed parameters, seed and drafted position;
    padding rows greedy."""
    import types

    from jaxllm.spec_decode.draft_sampling import _unpack_rows, draft_row_arrays

    def sequence(seed, num_out, **params):
        return types.SimpleNamespace(params=sp(**params), rng_seed=seed, num_output_tokens=num_out)

    seqs = [sequence(2**40 + 7, 3, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1), sequence(9, 0, temperature=0.0)]
    t, k, p, m, greedy, seeds, index = (np.asarray(a) for a in _unpack_rows(jnp.asarray(
        draft_row_arrays(seqs, 2, 4, V))))
    np.testing.assert_allclose(t, [0.7, 1.0, 1.0, 1.0], rtol=1e-6)
    assert k.tolist() == [5, V, V, V] and greedy.tolist() == [False, True, True, True]
    np.testing.assert_allclose(p, [0.9, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(m, [0.1, 0, 0, 0], rtol=1e-6)
    assert seeds.tolist() == [[2**8, 7], [0, 9], [0, 0], [0, 0]] and index.tolist() == [5, 2, 0, 0]
