"""Exact top-k / top-p / min_p sampling (jaxllm/models/sampler_filters.py, jaxllm/ops/sampling/) on CPU.

The fast path (race + exact membership) must give, token for token, the Gumbel-max over the survivors of the
sort-based reference threshold; the undecided rows go through ``exact_rows`` (its bisection reference and the
Pallas kernel in interpret mode); token frequencies over many seeds must follow the exact truncated law."""

import jax
import jax.numpy as jnp
import jaxllm.ops.sampling as ops_sampling
import numpy as np
import pytest
from jaxllm.ops.sampling import (
    exact_rows,
    row_keys,
    threshold_bisect,
    threshold_sorted,
    truncated_gumbel_argmax,
)

from jaxllm.models import sampler_filters as sf
from jaxllm.models import sampler_membership as sm

NEG_INF = -np.inf


def make_rows(seed, s, v, ks, ps, min_ps, ties=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s, v)) * 2
    x = (np.round(x, 0) if ties else x).astype(np.float32)  # rounded: many exact ties
    x[:, :5] = 6.0  # a 5-way tie at the top
    x[1, 7:] = NEG_INF  # a row with 7 finite logits
    t = rng.choice([1.0, 0.7, 1.5], size=s).astype(np.float32)
    k = rng.choice(ks, size=s).astype(np.int32)
    p = rng.choice(ps, size=s).astype(np.float32)
    min_p = rng.choice(min_ps, size=s).astype(np.float32)
    with np.errstate(divide="ignore"):
        floor = (x.max(axis=1) + t * np.log(min_p)).astype(np.float32)
    keys = row_keys(jnp.asarray(rng.integers(0, 2**32, (s, 2), dtype=np.uint32)), jnp.arange(s))
    return x, floor, k, p, t, keys


def reference_tokens(x, floor, k, p, t, keys):
    args = [jnp.asarray(a) for a in (x, floor, k, p, t)]
    tokens = truncated_gumbel_argmax(args[0], threshold_sorted(*args), args[4], keys, jnp.ones(len(x), bool))
    return np.asarray(tokens)


FAST = jax.jit(sf.sample_top_k_top_p)


def fast_tokens(x, floor, k, p, t, keys, fn=None):
    """``fn`` (a fresh function object, so jit traces again under monkeypatched module constants) or FAST."""
    f = jax.jit(lambda *a: fn(*a)) if fn else FAST
    return np.asarray(f(*map(jnp.asarray, (x, floor, t, k, p)), keys, jnp.ones(len(x), bool)))


@pytest.mark.parametrize("race, top_values, tests, impl", [
    (8, 64, 5, "reference"), (2, 3, 5, "pallas_triton"), (8, 64, 2, "reference")])
def test_tokens_equal_the_sorted_threshold_draw(monkeypatch, race, top_values, tests, impl):
    """Few race candidates / top values / tested records force the undecided-row path in many rows."""
    monkeypatch.setattr(sf, "RACE_CANDIDATES", race)
    monkeypatch.setattr(sf, "TOPK_CANDIDATES", top_values)
    monkeypatch.setattr(sm, "MEMBERSHIP_TESTS", tests)
    monkeypatch.setattr(ops_sampling, "default_impl", lambda v: impl)
    v = 300
    args = make_rows(3, 96, v, [1, 3, 5, 7, 40, 100, v], [0.05, 0.3, 0.5, 0.8, 0.95, 1.0], [0.0, 0.0, 0.01, 0.2])
    undecided = fast_tokens(*args, fn=lambda *a: sf.fast_path(*a)[1]).sum()
    assert undecided >= (8 if race < 8 else 1), undecided  # the exact rows path runs
    np.testing.assert_array_equal(fast_tokens(*args, fn=sf.sample_top_k_top_p), reference_tokens(*args))


def test_membership_sums_agree():
    """The GPU's one-pass variadic reduction and the CPU's per-draw loop give the same membership, which is the
    threshold's: a draw survives iff its logit is >= the sorted reference threshold (top-k or top-p rows)."""
    x, floor, k, p, t, _ = make_rows(11, 16, 300, [3, 100, 300], [0.3, 0.9, 1.0], [0.0, 0.1])
    k = np.where(p < 1.0, 300, k).astype(np.int32)  # a top-p row's top-k goes to the exact rows
    cand = np.sort(x, axis=1)[:, ::-1][:, ::37][:, :8].copy()
    cand[0, 5:] = NEG_INF
    cand = np.where(cand >= floor[:, None], cand, NEG_INF)  # the race draws from x >= floor only
    args = [jnp.asarray(a) for a in (x, cand, floor, x.max(axis=1), t, k, p)]
    both = [np.asarray(jax.jit(sm.survives, static_argnums=7)(*args, one_pass)) for one_pass in (True, False)]
    np.testing.assert_array_equal(both[0], both[1])
    assert both[0].any() and not both[0].all()
    want = cand >= np.asarray(threshold_sorted(*map(jnp.asarray, (x, floor, k, p, t))))[:, None]
    np.testing.assert_array_equal(both[0], want & (cand > NEG_INF))


def test_records_are_the_draws_that_beat_every_earlier_logit():
    ids = jnp.asarray([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]], jnp.int32)
    cand = jnp.asarray([[1.0, 0.5, 2.0, 2.0, 3.0, 4.0], [NEG_INF] * 6, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    rec_ids, rec_x = sm.records(ids, cand, 3)
    np.testing.assert_array_equal(np.asarray(rec_ids), [[5, 7, 9], [0, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(np.asarray(rec_x), [[1.0, 2.0, 3.0], [NEG_INF] * 3, [2.0, 3.0, 4.0]])


def test_bisection_threshold_equals_sorted_threshold():
    v = 257
    x, floor, k, p, t, _ = make_rows(4, 64, v, [1, 2, 9, 64, 200, v], [0.1, 0.6, 0.99, 1.0], [0.0, 0.05, 1.0])
    args = [jnp.asarray(a) for a in (x, floor, k, p, t)]
    np.testing.assert_array_equal(np.asarray(threshold_bisect(*args)), np.asarray(threshold_sorted(*args)))


@pytest.mark.parametrize("impl", ["reference", "pallas_triton"])
def test_exact_rows_replaces_only_selected_rows(impl):
    v = 1500  # not a multiple of the kernel's block: a masked tail
    x, floor, k, p, t, keys = make_rows(5, 8, v, [3, 100, v], [0.2, 0.9, 1.0], [0.0, 0.1], ties=False)
    rows = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    tokens = jnp.full(8, -7, jnp.int32)
    got = np.asarray(exact_rows(*map(jnp.asarray, (x, rows, floor, k, p, t)), keys, tokens, impl=impl))
    want = reference_tokens(x, floor, k, p, t, keys)
    np.testing.assert_array_equal(got, np.where(rows, want, -7))


def truncated_law(x, t, floor, k, p):
    """Exact probabilities (numpy float64, sort-free): survivors of min_p floor, top-k, top-p; softmax(x / t)."""
    x = x.astype(np.float64)
    keep = x >= floor
    if k < len(x):
        keep &= x >= np.sort(x)[::-1][k - 1]
    w = np.where(keep, np.exp((x - x.max()) / t), 0.0)
    above = np.array([w[x > xi].sum() for xi in x])
    keep &= (above < p * w.sum()) | (p >= 1.0)
    w = np.where(keep, w, 0.0)
    return w / w.sum()


@pytest.mark.parametrize("t, min_p, k, p, parts", [
    (1.0, 0.0, 600, 0.05, {}),  # flat law, small nucleus beyond the top values: the race often fails
    (1.0, 0.0, 600, 0.3, {"top_values": False}),  # top-p alone (TOP_P_CONFIG)
    (0.8, 0.0, 100, 0.9, {}),  # top_k > 64 with top_p: always the exact rows
    (0.7, 0.02, 20, 0.8, {}),  # everything together
    (0.7, 0.02, 20, 0.8, {"race": False, "membership": False}),  # from the top values alone (TOP_K_CONFIG)
    (1.3, 0.0, 90, 1.0, {}),  # top_k > 64 alone: membership counts
])
def test_token_frequencies_follow_the_truncated_law(t, min_p, k, p, parts):
    n, v = 12000, 600
    row = np.random.default_rng(6).normal(size=v).astype(np.float32) * 0.5
    with np.errstate(divide="ignore"):
        floor = np.float32(row.max() + t * np.log(min_p))
    keys = row_keys(jnp.asarray(np.random.default_rng(7).integers(0, 2**32, (n, 2), dtype=np.uint32)),
                    jnp.zeros(n, jnp.int32))
    col = lambda a, dt: jnp.full(n, a, dt)
    fast = jax.jit(lambda *a: sf.sample_top_k_top_p(*a, **parts)) if parts else FAST
    tokens = fast(jnp.broadcast_to(row, (n, v)), col(floor, jnp.float32), col(t, jnp.float32), col(k, jnp.int32),
               col(p, jnp.float32), keys, jnp.ones(n, bool))
    freq = np.bincount(np.asarray(tokens), minlength=v) / n
    law = truncated_law(row, t, floor, k, p)
    one = lambda a, dt: jnp.asarray([a], dt)
    t_sorted = threshold_sorted(jnp.asarray(row[None]), one(floor, jnp.float32), one(k, jnp.int32),
                                one(p, jnp.float32), one(t, jnp.float32))
    np.testing.assert_array_equal(row >= np.asarray(t_sorted)[0], law > 0)  # the jnp reference's support
    assert np.all(freq[law == 0] == 0), np.nonzero((law == 0) & (freq > 0))
    assert np.all(np.abs(freq - law) <= 5 * np.sqrt(law * (1 - law) / n) + 1e-12)
    # the 600 frequencies as one chi-square statistic (dof = support - 1): far above it means a biased law
    support = law > 0
    chi2 = np.sum((freq[support] - law[support]) ** 2 / law[support]) * n
    dof = support.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)


def test_edge_settings():
    """top_k >= vocab and top_p = 1 are no-ops; min_p = 1 keeps only the tied maxima; top_k = 1 is argmax (first
    of the tied maxima never wins alone: all tied tokens survive); every logit -inf gives token 0; greedy rows
    (no noise) are the argmax."""
    v, s = 40, 6
    rng = np.random.default_rng(8)
    x = rng.normal(size=(s, v)).astype(np.float32)
    x[:, [3, 9]] = 5.0  # tied maxima
    x[5] = NEG_INF
    t = np.ones(s, np.float32)
    k = np.array([v, v, v, 1, v, v], np.int32)
    p = np.array([1.0, 1.0, 1.0, 1.0, 1e-6, 0.5], np.float32)
    floor = np.full(s, NEG_INF, np.float32)
    floor[2] = 5.0  # min_p = 1
    keys = row_keys(jnp.asarray(rng.integers(0, 2**32, (s, 2), dtype=np.uint32)), jnp.arange(s))
    f = FAST
    args = (*map(jnp.asarray, (x, floor, t, k, p)), keys)
    plain = np.asarray(truncated_gumbel_argmax(jnp.asarray(x), jnp.asarray(floor), jnp.asarray(t), keys,
                                               jnp.ones(s, bool)))
    got = np.asarray(f(*args, jnp.ones(s, bool)))
    assert got[0] == plain[0] and got[1] == plain[1]  # nothing to truncate: the plain Gumbel-max draw
    assert got[2] in (3, 9) and got[3] in (3, 9) and got[4] in (3, 9)
    assert got[5] == 0
    greedy = np.asarray(f(*args, jnp.zeros(s, bool)))
    assert list(greedy[:5]) == [3] * 5


def test_mixed_rows_in_one_batch_do_not_change_each_other():
    """Rows shuffled, and half the rows replaced by others (logits and settings): the kept rows' tokens stay."""
    v, s = 300, 32
    args = make_rows(9, s, v, [2, 50, v], [0.3, 0.9, 1.0], [0.0, 0.1])
    other = make_rows(10, s, v, [1, 7, v], [0.05, 1.0], [0.0, 0.3])
    full = fast_tokens(*args)
    perm = np.random.default_rng(0).permutation(s)
    np.testing.assert_array_equal(fast_tokens(*[a[perm] for a in args]), full[perm])
    keep = np.arange(s) % 2 == 0
    mixed = [np.where(keep.reshape((s,) + (1,) * (np.ndim(a) - 1)), a, b) for a, b in zip(args, other)]
    np.testing.assert_array_equal(fast_tokens(*mixed)[keep], full[keep])


@pytest.mark.parametrize("top_values, race, membership, with_min_p, v", [
    (True, False, False, True, 300), (True, False, False, True, 3000),  # 3000: the blocked top values
    (True, True, False, True, 300), (False, True, True, True, 300), (False, True, False, True, 300),
    (False, True, True, False, 300)])  # the last: top-p alone, its mass scaled by the race winner's logit
def test_static_parts_left_out_keep_every_row_exact(top_values, race, membership, with_min_p, v):
    """A sampler variant without some parts (the top values, the race over the vocabulary, the membership pass)
    draws the reference token in every row it serves; a row that needs a missing part is drawn by the exact
    rows."""
    x, _, k, p, t, keys = make_rows(12, 48, v, [1, 5, 40, v], [0.3, 0.9, 1.0, 1.0], [0.0, 0.0, 0.1])
    min_p = jnp.asarray(np.random.default_rng(12).choice([0.0, 0.0, 0.1], size=len(x)).astype(np.float32))
    min_p = min_p if with_min_p else None
    # the sampler's min_p floor, as it computes it
    floor = np.asarray(jnp.max(x, axis=1) + t * jnp.log(min_p)) if with_min_p else np.full(len(x), NEG_INF)
    run = lambda f: np.asarray(jax.jit(f)(*map(jnp.asarray, (x, np.full(len(x), NEG_INF, np.float32), t, k, p)),
                                          keys, jnp.ones(len(x), bool)))
    if race:
        undecided = run(lambda *a: sf.fast_path(*a, min_p=min_p, top_values=top_values, membership=membership)[1])
    else:
        undecided = run(lambda *a: sf.top_values_draw(*a, min_p=min_p)[1])
    assert 0 < undecided.sum() < len(x)  # rows from the fast path and rows from the exact rows
    got = run(lambda *a: sf.sample_top_k_top_p(*a, min_p=min_p, top_values=top_values, race=race,
                                               membership=membership))
    np.testing.assert_array_equal(got, reference_tokens(x, floor, k, p, t, keys))


def test_top_values_draw_greedy_rows_take_the_first_maximum():
    """More tied maxima than top values: a greedy row still gets the first of them, as argmax; a sampled row
    with top_k 1 is undecided (its survivors lie beyond the top values) and the exact rows draw it."""
    v, s = 20000, 4  # 625 blocks of 32: the blocked top values
    x = np.random.default_rng(13).normal(size=(s, v)).astype(np.float32)
    tied = np.sort(np.random.default_rng(14).choice(np.arange(100, v), 100, replace=False))
    x[:, tied] = 9.0
    keys = row_keys(jnp.zeros((s, 2), jnp.uint32), jnp.arange(s))
    k, p, t = jnp.asarray([v, v, 1, 1], jnp.int32), jnp.ones(s), jnp.ones(s)
    noisy = jnp.asarray([False, False, True, True])
    tokens, undecided, _ = jax.jit(sf.top_values_draw)(jnp.asarray(x), jnp.full(s, -jnp.inf), t, k, p, keys, noisy)
    assert list(np.asarray(tokens)[:2]) == [tied[0]] * 2 and list(np.asarray(undecided)) == [False, False, True, True]
