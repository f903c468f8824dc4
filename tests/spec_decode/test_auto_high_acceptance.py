"""The automatic speculation rule when drafts are nearly always accepted (the bench's echo weights), with the
8B-dims cost model of the H100 and the H200: batch 1 and 16 speculate for every sequence; at batch 256 a step
speculates for m sequences only if the cost model says that m pays (MIN_GAIN over the plain step), and for none
when no m does; requests not verified yet are not tried at 256."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxllm.bench.workloads import CONFIG_DIR
from jaxllm.config import ModelConfig
from jaxllm.spec_decode.auto import MIN_GAIN, AcceptanceTracker, StepLoad, choose
from jaxllm.spec_decode.cost import SpecCostModel, expected_tokens, platform_peaks, step_cost

K = 4
CONTEXT = 400  # the spec-b* presets: 256-token prompts, 256 output tokens


def config(name: str) -> ModelConfig:
    with open(os.path.join(CONFIG_DIR, name)) as f:
        return ModelConfig.from_hf(json.load(f), dtype="bfloat16")


def cost_model(card: str, draft: bool) -> SpecCostModel:
    peaks = platform_peaks("gpu", card)
    return SpecCostModel(step_cost(config("llama-3.1-8b.json"), peaks, 2), K,
                         step_cost(config("llama-3.2-1b.json"), peaks, 2) if draft else None)


def echo_acceptance() -> float:
    """A request's estimate after 20 verifying steps that accepted all k drafts."""
    tracker = AcceptanceTracker()
    for _ in range(20):
        tracker.observe(0, K, K)
    return tracker.estimate(0)


def rates(cost: SpecCostModel, batch: int, acceptance: float) -> np.ndarray:
    """Expected tokens per second of a step of ``batch`` decodes when m = 0..batch of them speculate."""
    m = np.arange(batch + 1, dtype=np.float64)
    seconds = cost.seconds(batch + m * K, batch * CONTEXT + 0 * m, (batch + m * K) * CONTEXT, m, m * CONTEXT)
    return (batch + m * (expected_tokens(acceptance, K) - 1)) / seconds


@pytest.mark.parametrize("card", ["NVIDIA H100 80GB HBM3", "NVIDIA H200"])
@pytest.mark.parametrize("draft", [False, True], ids=["ngram", "draft"])
def test_rule_speculates_exactly_where_its_cost_model_says_it_pays(card, draft):
    a = echo_acceptance()
    assert a > 0.99
    cost = cost_model(card, draft)
    cap = cost.max_speculating_seqs(256, 0.8)  # D, what the runner compiles for
    for batch in (1, 16, 256):
        load = StepLoad(batch, batch * CONTEXT, batch * CONTEXT)
        chosen = choose(cost, load, [(i, K, CONTEXT, a, 1.0) for i in range(batch)], cap)
        r = rates(cost, batch, a)
        if batch <= 16:
            assert chosen == list(range(batch))
            assert r[batch] >= 1.8 * r[0]  # the model's own figure of the speed-up at acceptance ~1
        elif chosen:
            assert len(chosen) <= cap and r[len(chosen)] >= MIN_GAIN * r[0]
        else:
            assert r[1:cap + 1].max() < MIN_GAIN * r[0]


def test_at_256_only_known_good_drafts_speculate_and_only_on_the_h100():
    """What the spec-b256-echo-ngram preset meets: requests not verified yet (the prior, 0.7) are not tried in a
    256-sequence step on either card. Requests known to accept nearly every draft would be: on the H100
    (3.03 TB/s) about half of them, while the H200's bandwidth makes the step compute-bound enough that none
    pays."""
    load = StepLoad(256, 256 * CONTEXT, 256 * CONTEXT)
    h200, h100 = cost_model("NVIDIA H200", False), cost_model("NVIDIA H100 80GB HBM3", False)
    for a in (AcceptanceTracker().estimate(0), 0.9):
        cands = [(i, K, CONTEXT, a, 1.0) for i in range(256)]
        assert choose(h100, load, cands, h100.max_speculating_seqs(256, 0.8)) == []
    cands = [(i, K, CONTEXT, echo_acceptance(), 1.0) for i in range(256)]
    assert choose(h200, load, cands, h200.max_speculating_seqs(256, 0.8)) == []
    assert 64 <= len(choose(h100, load, cands, h100.max_speculating_seqs(256, 0.8))) < 256
