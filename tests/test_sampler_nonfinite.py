"""The sampler flags rows with no valid token (``SamplerOutput.nonfinite``): raw logits holding a NaN or +inf,
or processed logits that leave every token at -inf. Clean rows (a -inf raw logit included) are not flagged
and sample what they sample without the flagged rows beside them; the runner turns a flag into
``RunnerOutput.nonfinite``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_rows import seq, sp

from jaxllm.models.sampler import sample
from jaxllm.runner.sampling_metadata import build_sampling_metadata, to_runner_output
from jaxllm.runner.spec_rows import to_spec_runner_output

_sample = jax.jit(sample, static_argnums=2)
V = 48


def _run(seqs, logits):
    md, cfg = build_sampling_metadata(seqs, logits.shape[0], V)
    return jax.device_get(_sample(jnp.asarray(logits), md, cfg)), cfg


def _logits(rows: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, V)).astype(np.float32)


def _poisoned(logits: np.ndarray) -> np.ndarray:
    """Row 1: one NaN; row 2: one +inf; row 3: all NaN; row 0 and 4: clean (row 4 with a -inf logit)."""
    x = logits.copy()
    x[1, 7] = np.nan
    x[2, 9] = np.inf
    x[3] = np.nan
    x[4, 3] = -np.inf
    return x


@pytest.mark.parametrize("params", [
    sp(temperature=0.0),
    sp(temperature=1.0),
    sp(temperature=0.7, top_k=5, top_p=0.8, min_p=0.05),
    sp(temperature=0.0, logprobs=2),
], ids=["greedy_only", "random", "filters", "logprobs"])
def test_nonfinite_rows_are_flagged_and_clean_rows_unchanged(params):
    clean = _logits(5)
    seqs = [seq(params, seq_id=i, seed=i) for i in range(5)]
    ref, _ = _run(seqs, clean)
    out, _ = _run(seqs, _poisoned(clean))
    np.testing.assert_array_equal(out.nonfinite, [False, True, True, True, False])
    assert out.token_ids[0] == ref.token_ids[0]
    assert not ref.nonfinite.any()
    run_out = to_runner_output(seqs, out)
    assert run_out.nonfinite == {1, 2, 3} and set(run_out.sampled) == {0, 4}


def test_no_token_left_after_processing_is_flagged():
    """allowed_token_ids whose every id is banned (min_tokens' stop ids, or a bad word): nothing to sample."""
    logits = _logits(3)
    seqs = [seq(sp(temperature=0.0, allowed_token_ids=[5, 6]), seq_id=0, banned=[5, 6]),
            seq(sp(temperature=1.0, allowed_token_ids=[5]), seq_id=1, banned=[5]),
            seq(sp(temperature=0.0, allowed_token_ids=[5, 6]), seq_id=2, banned=[5])]
    out, _ = _run(seqs, logits)
    np.testing.assert_array_equal(out.nonfinite, [True, True, False])
    assert out.token_ids[2] == 6


def test_speculative_rows_stop_before_the_first_flagged_row():
    """A speculative sequence keeps the accepted tokens before its first flagged row, then errors."""
    spec = seq(sp(temperature=0.0, logprobs=None), seq_id=7)
    spec.draft_token_ids = (11, 12, 13)
    spec.spec_rows = tuple(seq(sp(temperature=0.0), seq_id=7, output_index=j) for j in range(4))
    plain = seq(sp(temperature=0.0, logprobs=None), seq_id=8)
    tokens = np.array([11, 12, 40, 41, 5], np.int32)
    out = type("Out", (), {"token_ids": tokens, "logprob": None, "rank": None, "top_ids": None,
                           "top_logprobs": None, "nonfinite": np.array([False, False, True, False, True])})()
    valid = np.array([True, True, True, False, True])
    run_out = to_spec_runner_output([spec, plain], out, valid)
    assert run_out.accepted == {7: [11, 12]} and run_out.nonfinite == {7, 8} and run_out.sampled == {}
