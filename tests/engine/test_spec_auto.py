"""The automatic speculation rule (``speculative_config`` without ``disable_by_batch_size``) through LLMEngine
with fake runners that verify drafts and carry an 8B-on-GPU step-cost model: outputs equal those without
speculation; a large batch turns speculation off and a small one back on; a request whose drafts keep failing
stops being drafted while a good one goes on; an explicit ``disable_by_batch_size`` keeps vLLM's rule."""

from __future__ import annotations

import json
import os

import engine_fakes
from test_engine_spec_decode import REPEAT, SPEC, AsyncSpecRunner, SpecRunner, run_all

from jaxllm.bench.workloads import CONFIG_DIR
from jaxllm.config import ModelConfig
from jaxllm.engine import LLMEngine
from jaxllm.sampling_params import SamplingParams
from jaxllm.spec_decode.auto import MIN_MATCH_RATE, AcceptanceTracker, StepLoad, choose, speculating_seqs_cap
from jaxllm.spec_decode.config import SpeculativeConfig
from jaxllm.spec_decode.cost import SpecCostModel, platform_peaks, step_cost

LONG = REPEAT * 10  # 150 scripted tokens that the n-gram proposer predicts after one period
GREEDY = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)


def cost_8b(k: int = 3, draft: bool = False) -> SpecCostModel:
    def cfg(name):
        with open(os.path.join(CONFIG_DIR, name)) as f:
            return ModelConfig.from_hf(json.load(f), dtype="bfloat16")

    gpu = platform_peaks("gpu", "NVIDIA H200")
    return SpecCostModel(step_cost(cfg("llama-3.1-8b.json"), gpu, 2), k,
                         step_cost(cfg("llama-3.2-1b.json"), gpu, 2) if draft else None)


def recording(base):
    class Recording(base):
        """Records per step (sequences, sequences with drafts); ``spec_cost`` is what a ModelRunner offers."""

        spec_cost = cost_8b()

        def _run(self, batch, resolve):
            self.steps = getattr(self, "steps", [])
            self.steps.append((len(batch.seqs), sum(bool(s.draft_token_ids) for s in batch.seqs)))
            return super()._run(batch, resolve)

    return Recording


def make(spec, script, max_num_seqs=4, runner_cls=None, **kw):
    sizes = {"num_blocks": 64, "block_size": 4, "max_num_seqs": max_num_seqs, "max_num_batched_tokens": 32,
             "max_model_len": 200, **kw}
    cls = runner_cls or recording(AsyncSpecRunner if engine_fakes.DEFAULT_ASYNC else SpecRunner)
    runner = cls(sizes["num_blocks"], sizes["block_size"], sizes["max_num_seqs"], sizes["max_num_batched_tokens"],
                 script)
    eng = LLMEngine(runner, vocab_size=engine_fakes.VOCAB, eos_token_ids=(0,), speculative_config=spec,
                    async_scheduling=engine_fakes.DEFAULT_ASYNC, **sizes)
    return eng, runner


def test_outputs_equal_and_small_batches_speculate():
    script = {(10, 11, 12, 13): LONG, (20, 21): LONG[3:]}
    reqs = [((10, 11, 12, 13), GREEDY), ((20, 21), GREEDY), ((30, 31, 32), GREEDY)]
    reqs = [(list(p), sp) for p, sp in reqs]
    eng, runner = make(SPEC, script)
    assert eng.scheduler.speculation.cost is runner.spec_cost
    assert run_all(eng, reqs) == run_all(make(None, script)[0], reqs)
    assert eng.stats.spec_decode_num_accepted_tokens > 20
    assert eng.stats.spec_decode_num_drafts > 10


def test_large_batch_turns_speculation_off_and_a_small_one_back_on():
    """256 requests (an 8B model's decode of 256 sequences is compute-bound on the GPU's roofline): no step
    drafts while they run; once the 254 short ones finished, the two long ones speculate."""
    script = {(10, 11, 12, 13): LONG}
    reqs = [([10, 11, 12, 13], SamplingParams(temperature=0.0, max_tokens=6 if i >= 2 else 60, ignore_eos=True))
            for i in range(256)]
    eng, runner = make(SPEC, script, max_num_seqs=256, max_num_batched_tokens=2048, num_blocks=4096)
    assert eng.scheduler.speculation.max_seqs < 256  # the compiled cap on speculating sequences
    out = run_all(eng, reqs)
    assert all(o[0][0] == LONG[:len(o[0][0])] for o in out)
    big = [d for n, d in runner.steps if n > 64]
    small = [d for n, d in runner.steps if n <= 2]
    assert len(big) >= 5 and not any(big)
    assert sum(d > 0 for d in small) >= 5
    assert eng.stats.spec_decode_num_accepted_tokens > 30


class FakeDrafter:
    """``propose_drafts`` of a draft model that is right for prompts starting with 10 (the script's
    continuation) and always wrong for the others; counts the drafts proposed per prompt."""

    def __init__(self, script):
        self.script, self.drafted = script, {}

    def propose_drafts(self, items):
        out = []
        for seq, n in items:
            prompt = tuple(seq.token_ids[:seq.num_prompt_tokens])
            self.drafted[prompt] = self.drafted.get(prompt, 0) + 1
            done = len(seq.token_ids) - seq.num_prompt_tokens
            good = prompt[0] == 10
            out.append(tuple(self.script[prompt][done:done + n]) if good else (63,) * n)
        return out


def drafting_runner(script):
    base = recording(AsyncSpecRunner if engine_fakes.DEFAULT_ASYNC else SpecRunner)
    drafter = FakeDrafter(script)
    return type("DraftingRunner", (base,), {"propose_drafts": lambda self, items: drafter.propose_drafts(items),
                                            "drafter": drafter})


def test_a_request_whose_drafts_fail_stops_being_drafted():
    script = {(10, 11): LONG, (20, 21): LONG[1:]}  # 63 never occurs in LONG: every draft of (20, 21) fails
    reqs = [([10, 11], GREEDY), ([20, 21], GREEDY)]
    spec = {"method": "draft_model", "model": "fake-draft", "num_speculative_tokens": 3}
    eng, runner = make(spec, script, runner_cls=drafting_runner(script))
    assert run_all(eng, reqs) == run_all(make(None, script)[0], reqs)
    drafted = runner.drafter.drafted
    assert drafted[(10, 11)] >= 8  # 40 tokens at up to 4 a step
    assert 1 <= drafted[(20, 21)] <= 8  # tried, then left alone for the rest of its 40 tokens

    # vLLM's explicit rule drafts every running sequence while at most that many run, whatever they accept
    eng, runner = make({**spec, "disable_by_batch_size": 2}, script, runner_cls=drafting_runner(script))
    assert run_all(eng, reqs) == run_all(make(None, script)[0], reqs)
    assert runner.drafter.drafted[(20, 21)] >= 30
    eng, runner = make({**spec, "disable_by_batch_size": 1}, script, runner_cls=drafting_runner(script))
    run_all(eng, reqs)
    assert all(d == 0 for n, d in runner.steps if n == 2)


def test_acceptance_tracker_and_choice():
    t = AcceptanceTracker()
    assert t.estimate(1) == 0.7
    for _ in range(6):
        t.observe(1, 3, 0)
    low = t.estimate(1)
    assert low < 0.1
    t.step += 300  # long unverified: the counts fade back towards the prior
    assert t.estimate(1) > 0.5 > low
    for _ in range(17):
        t.lookup(2, False)
    before = t.match_rate(2)
    assert before < MIN_MATCH_RATE and t.match_rate(3) == 0.75  # a request not looked up yet: the prior
    t.step += 30  # not looked up again for a while (each lookup makes a step wait for the previous one)
    assert t.match_rate(2) < MIN_MATCH_RATE
    t.step += 20  # then retried
    assert t.match_rate(2) >= MIN_MATCH_RATE
    t.lookup(2, True)
    assert t.match_rate(2) > before
    cost = cost_8b(k=4)
    cands = lambda n, a: [(i, 4, 300, a, 1.0) for i in range(n)]
    assert choose(cost, StepLoad(1, 300, 300), cands(1, 0.7), 80) == [0]
    assert choose(cost, StepLoad(256, 256 * 300, 256 * 300), cands(256, 0.9), 80) == []
    assert choose(cost, StepLoad(1, 300, 300), cands(1, 0.01), 80) == []  # not worth a draft
    assert choose(None, StepLoad(256, 0, 0), cands(256, 0.7), 80) == list(range(80))  # no cost model: the cap
    auto = SpeculativeConfig.from_dict(SPEC)
    assert 16 <= speculating_seqs_cap(auto, 256, cost) < 256
    assert speculating_seqs_cap(SpeculativeConfig.from_dict({**SPEC, "disable_by_batch_size": 7}), 256, cost) == 7
