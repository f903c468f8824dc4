"""The acceptance rule of speculative decoding (jaxllm/spec_decode/rejection.py) on CPU: sampling every
speculative row with the plain sampler and keeping the rows up to the first mismatch emits exactly the law of
standard speculative sampling with a one-hot (n-gram) draft. Checked over many seeds against the exact
distribution of the emitted tokens, and the textbook reference against the same law."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
from sampler_rows import seq, sp
from test_sampler import np_distribution

from jaxllm.models.sampler import sample
from jaxllm.runner.sampling_metadata import build_sampling_metadata
from jaxllm.runner.spec_rows import spec_arrays
from jaxllm.spec_decode.rejection import accepted_rows, rejection_sample_reference

V = 12
LOGITS = np.array([[2.0, 1.5, 1.4, 1.0, 0.3, 0.0, -0.5, -1.0, -2.0, -3.0, 0.9, 1.45],
                   [0.1, 2.2, -1.0, 0.4, 1.9, 0.0, 0.3, -2.0, 0.5, 1.0, -0.5, 0.2],
                   [1.0, 0.0, 0.5, -0.3, 0.8, 0.0, 1.2, 0.1, -1.0, 0.4, 0.6, 0.9]], np.float32)
DRAFTS = (1, 4)  # row 0's sample must be 1 and row 1's 4 for the next row to count
N = 6000  # draws per law: 5-sigma bounds of a few percent


def test_accepted_rows_keeps_the_prefix_up_to_the_first_mismatch():
    # sequence A: rows 0-3 (3 drafts), mismatch at row 1; B: row 4 (no draft); C: rows 5-7, all accepted
    sampled = jnp.array([7, 9, 3, 3, 5, 1, 2, 8])
    draft = jnp.array([7, 8, 3, -1, -1, 1, 2, -1])
    start = jnp.array([0, 0, 0, 0, 4, 5, 5, 5])
    assert accepted_rows(sampled, draft, start).tolist() == [True, True, False, False, True, True, True, True]


def outcome_law(params):
    """Exact probability of each emitted tuple: the first mismatch ends it, all accepted adds the bonus."""
    p = [np_distribution(row, **params) for row in LOGITS]
    law, prefix = {}, 1.0
    for j in range(len(DRAFTS) + 1):
        for t in range(V):
            if j < len(DRAFTS) and t == DRAFTS[j]:
                continue
            law[DRAFTS[:j] + (t,)] = prefix * p[j][t]
        if j < len(DRAFTS):
            prefix *= p[j][DRAFTS[j]]
    return law


def assert_law(counts, law, n=N):
    for outcome in counts:
        assert law.get(outcome, 0) > 0, f"emitted {outcome}, which has probability 0"
    for outcome, p in law.items():
        freq = counts.get(outcome, 0) / n
        assert abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12, (outcome, freq, p)


def spec_path(params, n=N):
    """n speculative sequences (seeds 0..n-1) of 3 rows each, through the sampler and ``accepted_rows``."""
    base = [3, 4]
    seqs = []
    for i in range(n):
        s = seq(sp(**params), seq_id=i, seed=i, token_ids=base, output_index=0)
        s.draft_token_ids = DRAFTS
        s.spec_rows = tuple(seq(sp(**params), seq_id=i, seed=i, token_ids=base + list(DRAFTS[:j]),
                                num_prompt_tokens=2, output_index=j) for j in range(3))
        seqs.append(s)
    rows = [r for s in seqs for r in s.sampling_rows()]
    md, cfg = build_sampling_metadata(rows, len(rows), V)
    tokens = jax.jit(sample, static_argnums=2)(jnp.asarray(np.tile(LOGITS, (n, 1))), md, cfg).token_ids
    arrays = spec_arrays(seqs, len(rows))
    valid = np.asarray(accepted_rows(tokens, jnp.asarray(arrays[0]), jnp.asarray(arrays[1])))
    tokens, valid = np.asarray(tokens).reshape(n, 3), valid.reshape(n, 3)
    return collections.Counter(tuple(tokens[i][valid[i]].tolist()) for i in range(n))


def test_spec_path_emits_the_speculative_sampling_law():
    for params in ({"temperature": 0.9}, {"temperature": 1.2, "top_k": 6, "top_p": 0.8}):
        assert_law(spec_path(params), outcome_law(params))


def test_reference_emits_the_same_law():
    params = {"temperature": 0.9}
    probs = jnp.asarray(np.stack([np_distribution(row, **params) for row in LOGITS]), jnp.float32)
    keys = jax.random.split(jax.random.key(0), N)
    tokens, num = jax.jit(jax.vmap(lambda k: rejection_sample_reference(k, probs, jnp.array(DRAFTS))))(keys)
    tokens, num = np.asarray(tokens), np.asarray(num)
    counts = collections.Counter(tuple(tokens[i, :num[i]].tolist()) for i in range(N))
    assert_law(counts, outcome_law(params))


def test_greedy_rows_accept_while_the_draft_is_the_argmax():
    # argmax of row 0 is 0 != draft 1: only the target's own token is emitted
    assert spec_path({"temperature": 0.0}, n=4) == {(0,): 4}
    # a bias makes draft 1 row 0's argmax (accepted); row 1's argmax is 1, not draft 4: it ends there
    bias = {"temperature": 0.0, "logit_bias": {1: 5.0, 4: 5.0}}
    assert spec_path(bias, n=4) == {(1, 1): 4}
