"""Structured outputs through the engine with a fake runner that samples only tokens the row's bitmask allows
(sync and async, see conftest.py): outputs match their constraint, unconstrained requests in the same batches
are unchanged, n > 1, stop strings, preemption, and a bad spec fails before any step."""

from __future__ import annotations

import re

import engine_fakes
import numpy as np
import pytest
from engine.bpe_tokenizer import bpe_tokenizer
from engine_fakes import AsyncCacheCheckingRunner, CacheCheckingRunner, make_engine
from test_engine_scheduling import run_all

from jaxllm.sampling_params import SamplingParams
from jaxllm.structured_outputs import StructuredOutputsParams, step

VOCAB = 448  # >= the BPE tokenizer's 421 tokens
REGEX = r"(ab|c)[0-9]{1,3}(-[a-c]{1,4})?"
CHOICES = ["Hello world", "lazy dog", "STOP"]


@pytest.fixture(autouse=True, params=[False, True], ids=["inline", "grammar-thread"])
def grammar_thread(request, monkeypatch):
    """Every test with the grammar work inline after the scheduler's loop and on the grammar thread beside it
    (``USE_THREAD``, which a machine of few cores turns off; every step on the thread)."""
    monkeypatch.setattr(step, "USE_THREAD", request.param)
    if request.param:
        monkeypatch.setattr(step, "PARALLEL_MIN", 1)


def allowed_tokens(bitmask) -> np.ndarray:
    bits = (np.asarray(bitmask, np.int32)[:, None] >> np.arange(32)) & 1
    return np.flatnonzero(bits.reshape(-1)[:VOCAB])


def grammar_runner(num_blocks, block_size, max_num_seqs, max_num_batched_tokens):
    """The fake runner of the current mode, picking a pseudo-random allowed token on constrained rows."""
    base = AsyncCacheCheckingRunner if engine_fakes.DEFAULT_ASYNC else CacheCheckingRunner

    class GrammarRunner(base):
        def next_token(self, s, context):
            if s.grammar_bitmask is None:
                return super().next_token(s, context)
            allowed = allowed_tokens(s.grammar_bitmask)
            assert len(allowed), f"seq {s.seq_id}: empty mask"
            return int(allowed[(sum(context[-3:]) * 31 + s.rng_seed * 7 + s.output_index) % len(allowed)])

    return GrammarRunner(num_blocks, block_size, max_num_seqs, max_num_batched_tokens)


def engine(num_blocks=256, **kw):
    runner = grammar_runner(num_blocks, 4, 8, 64)
    eng, _ = make_engine(num_blocks=num_blocks, block_size=4, max_num_seqs=8, max_num_batched_tokens=64,
                         tokenizer=bpe_tokenizer(), eos_token_ids=[0], runner=runner, **kw)
    return eng, runner


def constrained(so, **kw):
    return SamplingParams(temperature=0.8, seed=kw.pop("seed", 1), max_tokens=kw.pop("max_tokens", 24),
                          structured_outputs=so, **kw)


def prompt(i):
    return [5 + i, 40 + 2 * i, 7, 90 + i]


def test_constrained_and_unconstrained_rows_in_one_batch():
    plain = [SamplingParams(temperature=0, max_tokens=12, ignore_eos=True) for _ in range(3)]
    eng, _ = engine()
    for i, p in enumerate(plain):
        eng.add_request(f"plain{i}", prompt(i), p)
    alone = run_all(eng)
    eng, runner = engine()
    for i, p in enumerate(plain):
        eng.add_request(f"plain{i}", prompt(i), p)
    eng.add_request("re", prompt(3), constrained(StructuredOutputsParams(regex=REGEX), n=2))
    eng.add_request("choice", prompt(4), constrained(StructuredOutputsParams(choice=CHOICES)))
    outs = run_all(eng)
    for i in range(3):
        assert outs[f"plain{i}"].outputs[0].token_ids == alone[f"plain{i}"].outputs[0].token_ids
    texts = [c.text for c in outs["re"].outputs]
    assert len(texts) == 2 and all(re.fullmatch(REGEX, t) for t in texts), texts
    assert all(c.finish_reason == "stop" for c in outs["re"].outputs)
    assert outs["choice"].outputs[0].text in CHOICES
    assert any(any(s[0] >= 3 for s in step) for step in runner.batches)  # really batched together


def test_preemption_keeps_the_grammar_in_step():
    # 12 blocks of 4 tokens for 6 sequences growing to ~28 tokens: some are preempted and recomputed
    eng, _ = engine(num_blocks=12)
    for i in range(6):
        eng.add_request(str(i), prompt(i), constrained(StructuredOutputsParams(regex=r"[a-c]{6,20}"), seed=i,
                                                          max_tokens=40))
    outs = run_all(eng)
    assert eng.stats.num_preemptions > 0
    for o in outs.values():
        assert re.fullmatch(r"[a-c]{6,20}", o.outputs[0].text), o.outputs[0].text


def test_stop_string_ends_a_constrained_output():
    eng, _ = engine()
    eng.add_request("a", prompt(0), constrained(StructuredOutputsParams(choice=["STOP here", "lazy dog"]),
                                                stop=[" here"]))
    out = run_all(eng)["a"].outputs[0]
    assert out.text in ("STOP", "lazy dog")


def test_bad_specs_fail_at_add_request_and_others_still_run():
    eng, _ = engine()
    eng.add_request("good", prompt(0), constrained(StructuredOutputsParams(regex="[ab]{3}")))
    for bad in (StructuredOutputsParams(regex="[a-z"), StructuredOutputsParams(json="{not json"),
                StructuredOutputsParams(json={"type": "objectx"}),
                StructuredOutputsParams(grammar="start: undefined_rule\n")):
        with pytest.raises(ValueError, match=r"request 'bad'.*invalid structured_outputs"):
            eng.add_request("bad", prompt(1), constrained(bad))
    assert re.fullmatch("[ab]{3}", run_all(eng)["good"].outputs[0].text)


def test_structured_outputs_need_a_tokenizer():
    runner = grammar_runner(64, 4, 8, 64)
    eng, _ = make_engine(num_blocks=64, runner=runner)
    with pytest.raises(ValueError, match="need a tokenizer"):
        eng.add_request("a", [1, 2], constrained(StructuredOutputsParams(choice=["x"])))


def test_a_compiling_grammar_does_not_hold_up_other_requests(monkeypatch):
    import threading

    from jaxllm.structured_outputs.grammar import GrammarCompiler

    release = threading.Event()
    compile_ = GrammarCompiler._compile
    monkeypatch.setattr(GrammarCompiler, "_compile", lambda self, *a: release.wait(30) and compile_(self, *a))
    eng, _ = engine()
    eng.add_request("slow", prompt(0), constrained(StructuredOutputsParams(regex="[ab]{4}")))
    eng.add_request("plain", prompt(1), SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    done = {}
    while "plain" not in done:
        done.update({o.request_id: o for o in eng.step()})
    assert eng.scheduler.waiting_grammars()  # "plain" finished while the grammar was still compiling
    release.set()
    done.update(run_all(eng))
    assert re.fullmatch("[ab]{4}", done["slow"].outputs[0].text)


def test_llguidance_tokenizer_is_built_at_start_up_and_again_for_a_new_tokenizer():
    eng, _ = engine()
    grammars = eng._grammars
    assert grammars is not None and grammars._ll_tokenizer is not None  # building before any request
    grammars._ll_tokenizer.result(timeout=60)
    assert grammars.tokenizer_seconds > 0
    eng.add_request("a", prompt(0), constrained(StructuredOutputsParams(regex="[ab]{3}")))
    assert eng._grammars is grammars
    assert re.fullmatch("[ab]{3}", run_all(eng)["a"].outputs[0].text)
    eng.set_tokenizer(bpe_tokenizer())
    assert eng._grammars is not grammars and eng._grammars._ll_tokenizer is not None
    eng.set_tokenizer(None)
    assert eng._grammars is None
    with pytest.raises(ValueError, match="need a tokenizer"):
        eng.add_request("b", prompt(1), constrained(StructuredOutputsParams(choice=["x"])))


def test_a_tokenizer_llguidance_cannot_read_fails_the_constrained_request_only():
    class Unreadable:
        def to_str(self):
            return '{"not": "a tokenizer"}'

    tok = bpe_tokenizer()
    eng, _ = engine()
    eng.tokenizer = type("T", (), {"backend_tokenizer": Unreadable(), "eos_token_id": 0, "__len__": lambda s: 421})()
    eng._prepare_grammars()  # the build fails on its thread; the error waits for the first constrained request
    with pytest.raises(ValueError, match=r"request 'a': structured outputs cannot use this tokenizer"):
        eng.add_request("a", prompt(0), constrained(StructuredOutputsParams(regex="[ab]{3}")))
    eng.tokenizer = tok
    eng.add_request("b", prompt(1), SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(run_all(eng)["b"].outputs[0].token_ids) == 3
