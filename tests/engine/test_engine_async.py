"""Asynchronous scheduling specifics (every other engine test also runs in this mode, see conftest.py): the
engine really overlaps steps, falls back to waiting when a row needs its tokens on the host, drops the extra
token of a sequence that stopped, and recovers from a failed step with two steps in flight."""

from __future__ import annotations

import pytest
from engine_fakes import AsyncCacheCheckingRunner, make_engine, reference_greedy
from test_engine_scheduling import check_against_reference, greedy, random_prompts, run_all

from jaxllm.sampling_params import SamplingParams


def test_steps_overlap_and_outputs_match_sync():
    prompts = random_prompts(12, 3, 30)
    outs = {}
    for mode in (False, True):
        eng, runner = make_engine(max_num_seqs=4, max_num_batched_tokens=32, async_scheduling=mode)
        for i, p in enumerate(prompts):
            eng.add_request(str(i), p, greedy(5 + i))
        outs[mode] = run_all(eng)
        if mode:
            assert runner.max_in_flight == 2
            assert runner.in_flight == 0  # drained at the end
    check_against_reference(outs[True], prompts, [5 + i for i in range(12)])
    for rid, o in outs[False].items():
        assert o.outputs[0].token_ids == outs[True][rid].outputs[0].token_ids


def test_length_limited_sequences_are_not_scheduled_past_their_end():
    eng, runner = make_engine(async_scheduling=True)
    eng.add_request("a", [1, 2, 3], greedy(4))
    run_all(eng)
    # prefill + 3 decodes: the 4th token is sampled by the last decode, no extra step
    assert len(runner.batches) == 4 and eng.stats.num_generated_tokens == 4


def test_penalties_wait_for_tokens():
    eng, runner = make_engine(async_scheduling=True)
    for i, p in enumerate(random_prompts(3)):
        eng.add_request(str(i), p, SamplingParams(max_tokens=6, repetition_penalty=1.2, seed=i))
    outs = run_all(eng)
    assert runner.max_in_flight == 1 and all(len(o.outputs[0].token_ids) == 6 for o in outs.values())


def test_stop_token_drops_the_extra_token():
    prompt = [7, 8, 9]
    want = reference_greedy(prompt, 40)
    stop = want[3]  # the 4th generated token stops the request
    first = want.index(stop)
    eng, runner = make_engine(async_scheduling=True)
    eng.add_request("s", prompt, greedy(40, stop_token_ids=[stop]))
    eng.add_request("long", [1, 2], greedy(12))
    out = run_all(eng)
    assert list(out["s"].outputs[0].token_ids) == want[: first + 1]
    assert out["s"].outputs[0].finish_reason == "stop" and out["s"].outputs[0].stop_reason == stop
    assert list(out["long"].outputs[0].token_ids) == reference_greedy([1, 2], 12)
    assert eng.stats.num_generated_tokens == first + 1 + 12
    assert runner.max_in_flight == 2


def test_abort_with_a_step_in_flight():
    eng, runner = make_engine(async_scheduling=True)
    eng.add_request("a", [1, 2, 3], greedy(20))
    eng.add_request("b", [4, 5, 6], greedy(6))
    eng.step()
    eng.step()
    assert runner.in_flight == 1
    eng.abort_request("a")
    out = run_all(eng)
    assert list(out) == ["b"] and list(out["b"].outputs[0].token_ids) == reference_greedy([4, 5, 6], 6)


class FailingAsync(AsyncCacheCheckingRunner):
    """Fails while fetching step ``fail_at``, after corrupting the slots of every step dispatched."""

    def __init__(self, *a, fail_at=3, **kw):
        super().__init__(*a, **kw)
        self.fetches, self.fail_at, self.dispatched = 0, fail_at, []

    def dispatch(self, batch):
        self.dispatched.append(batch)
        return super().dispatch(batch)

    def fetch(self, out):
        self.fetches += 1
        if self.fetches == self.fail_at:
            for batch in self.dispatched[-2:]:
                for s in batch.seqs:
                    for pos in range(s.start, s.end):
                        self.cache[self.slot(s.block_table, pos)] = (-7, pos)
            self.in_flight = 0
            raise KeyboardInterrupt
        return super().fetch(out)


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_failure_with_two_steps_in_flight_is_recovered(fail_at):
    prompts = [list(range(1, 30)), list(range(1, 30)), list(range(3, 20))]
    runner = FailingAsync(64, 4, max_num_seqs=4, max_num_batched_tokens=16, fail_at=fail_at)
    eng, _ = make_engine(num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=16, runner=runner,
                         async_scheduling=True)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(6))
    with pytest.raises(KeyboardInterrupt):
        for _ in range(fail_at):
            eng.step()
    assert eng.get_num_unfinished_requests() == 3
    check_against_reference(run_all(eng), prompts, [6, 6, 6])
    eng.add_request("again", prompts[0], greedy(6))
    assert list(run_all(eng)["again"].outputs[0].token_ids) == reference_greedy(prompts[0], 6)
