"""A step's grammar work on the grammar thread (``GrammarStep`` with ``MaskFill``): the same tokens consumed and
the same masks as one matcher at a time, a rejected token leaves its row unmasked and is reported, ``undo``
takes the consumed tokens back, and a failing ``Scheduler.update`` leaves the grammars as they were."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from engine.bpe_tokenizer import bpe_tokenizer
from test_engine_structured import constrained, engine, prompt

from jaxllm.engine.batch import RunnerOutput, ScheduledBatch, ScheduledSeq
from jaxllm.sampling_params import SamplingParams
from jaxllm.structured_outputs import StructuredOutputsParams, step
from jaxllm.structured_outputs.grammar import GrammarCompiler
from jaxllm.structured_outputs.step import PARALLEL_MIN, GrammarStep

VOCAB = 448
SPECS = [StructuredOutputsParams(regex=r"(ab|c)[0-9]{1,3}(-[a-c]{1,4})?"),
         StructuredOutputsParams(choice=["Hello world", "lazy dog"]),
         StructuredOutputsParams(json={"type": "object", "properties": {"a": {"type": "integer"}}})]


def rows(n):
    comp = GrammarCompiler(bpe_tokenizer(), VOCAB, (0,))
    seqs = [ScheduledSeq(i, [1, 2], 1, 1, [0], 1, SamplingParams(), True, 0, i,
                         grammar=comp.new_state(str(i), SPECS[i % len(SPECS)])) for i in range(n)]
    for s in seqs:
        s.grammar.wait()
    return comp, seqs


def allowed(bits) -> np.ndarray:
    return np.flatnonzero(((np.asarray(bits)[:, None] >> np.arange(32)) & 1).reshape(-1)[:VOCAB])


def reference_mask(state) -> np.ndarray:
    out = np.zeros((1, -(-VOCAB // 32)), np.int32)
    state.matcher.unsafe_compute_mask_ptr(out.ctypes.data, out.nbytes)
    return out[0]


@pytest.fixture(autouse=True)
def grammar_thread(monkeypatch):
    """The grammar thread whatever the machine's core count (``USE_THREAD``)."""
    monkeypatch.setattr(step, "USE_THREAD", True)


@pytest.mark.parametrize("n", [3, 2 * PARALLEL_MIN])  # inline and on the grammar thread
def test_same_tokens_and_masks_as_one_matcher_at_a_time(n):
    comp, seqs = rows(n)
    _, ref = rows(n)
    rng = np.random.default_rng(n)
    tokens = []
    interval = sys.getswitchinterval()
    for _ in range(6):
        ok = GrammarStep([s.grammar for s in seqs] if tokens else [], tokens, comp.mask_fill(ScheduledBatch(seqs)))
        assert all(ok.result())
        assert sys.getswitchinterval() == interval  # lowered only while the grammar thread works
        for s, r, t in zip(seqs, ref, tokens or [None] * n):
            if t is not None and not r.grammar.matcher.is_stopped():
                assert r.grammar.matcher.consume_token(t)
            np.testing.assert_array_equal(s.grammar_bitmask, reference_mask(r.grammar))
        tokens = [int(rng.choice(allowed(s.grammar_bitmask))) for s in seqs]


def test_a_rejected_token_is_reported_and_its_row_left_unmasked():
    comp, seqs = rows(2 * PARALLEL_MIN)
    first = [int(allowed(reference_mask(s.grammar))[0]) for s in seqs]
    bad = int(np.setdiff1d(np.arange(VOCAB), allowed(reference_mask(seqs[0].grammar)))[0])
    ok = GrammarStep([s.grammar for s in seqs], [bad, *first[1:]], comp.mask_fill(ScheduledBatch(seqs))).result()
    assert ok == [False] + [True] * (len(seqs) - 1)
    assert seqs[0].grammar.failed and seqs[0].grammar_bitmask is None
    assert all(s.grammar_bitmask is not None for s in seqs[1:])


def test_undo_takes_the_consumed_tokens_back():
    _, seqs = rows(2 * PARALLEL_MIN)
    before = [reference_mask(s.grammar) for s in seqs]
    tokens = [int(allowed(m)[-1]) for m in before]
    GrammarStep([s.grammar for s in seqs], tokens).undo()
    for s, m in zip(seqs, before):
        np.testing.assert_array_equal(reference_mask(s.grammar), m)
    assert all(GrammarStep([s.grammar for s in seqs], tokens).result())


def test_a_failing_update_leaves_the_grammars_as_they_were():
    eng, _ = engine(async_scheduling=False)
    for i in range(2 * PARALLEL_MIN):
        eng.add_request(str(i), prompt(i % 4), constrained(StructuredOutputsParams(regex="[ab]{2,9}"), logprobs=1))
    while not eng.scheduler.num_generated_tokens:
        eng.step()
    sched = eng.scheduler
    batch = sched.schedule()
    rows = [s for s in batch.seqs if s.sample]
    assert len(rows) >= PARALLEL_MIN
    masks = [reference_mask(s.grammar) for s in rows]
    # a runner that lost the logprobs: update raises in its loop, after the grammars consumed the tokens
    sampled = {s.seq_id: int(allowed(m)[0]) for s, m in zip(rows, masks)}
    with pytest.raises(RuntimeError, match="no logprobs"):
        sched.update(batch, RunnerOutput(sampled=sampled))
    for s, m in zip(rows, masks):
        np.testing.assert_array_equal(reference_mask(s.grammar), m)
