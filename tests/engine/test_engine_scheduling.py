"""Scheduling through LLMEngine with a cache-checking fake runner: batching limits, chunked prefill,
preemption, prefix caching, n > 1 and seeds. Outputs must equal an unconstrained reference run."""

from __future__ import annotations

import random

import pytest
from engine_fakes import VOCAB, CacheCheckingRunner, make_engine, reference_greedy

from jaxllm.sampling_params import SamplingParams


def run_all(eng, max_steps=100_000):
    outs = {}
    steps = 0
    while eng.has_unfinished_requests():
        for o in eng.step():
            if not o.finished:  # CUMULATIVE (the default output_kind) also streams unfinished outputs
                continue
            assert o.request_id not in outs
            outs[o.request_id] = o
        steps += 1
        assert steps < max_steps
    # every block is back in the free queue
    assert eng.block_manager.num_free_blocks == eng.num_blocks
    assert all(r == 0 for r in eng.block_manager.ref_counts)
    return outs


def random_prompts(n, lo=1, hi=40, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(VOCAB) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def check_against_reference(outs, prompts, max_tokens):
    for i, p in enumerate(prompts):
        o = outs[str(i)]
        assert o.finished and o.prompt_token_ids == p
        assert list(o.outputs[0].token_ids) == reference_greedy(p, max_tokens[i]), f"request {i}"
        assert o.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("caching", [True, False])
def test_more_requests_than_max_num_seqs(caching):
    prompts = random_prompts(30)
    max_tokens = [1 + i % 17 for i in range(30)]
    eng, runner = make_engine(max_num_seqs=4, max_num_batched_tokens=64, enable_prefix_caching=caching)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(max_tokens[i]))
    assert eng.get_num_unfinished_requests() == 30
    check_against_reference(run_all(eng), prompts, max_tokens)
    assert max(len(b) for b in runner.batches) == 4


def test_chunked_prefill_small_budget():
    prompts = random_prompts(12, lo=20, hi=60, seed=1)
    max_tokens = [5 + i for i in range(12)]
    eng, runner = make_engine(max_num_seqs=4, max_num_batched_tokens=7, enable_prefix_caching=False)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(max_tokens[i]))
    check_against_reference(run_all(eng), prompts, max_tokens)
    # prompts were split into chunks, and chunks were mixed with decodes in the same step
    chunks = [n for b in runner.batches for (_, _, n, sample) in b if not sample]
    assert chunks and max(chunks) <= 7
    assert any(
        any(n == 1 and s for (_, _, n, s) in b) and any(not s for (_, _, _, s) in b) for b in runner.batches
    )


@pytest.mark.parametrize("caching", [True, False])
def test_preemption_keeps_outputs_exact(caching):
    prompts = random_prompts(16, lo=5, hi=30, seed=2)
    max_tokens = [20 + i for i in range(16)]
    # 16 blocks of 4 tokens = 64 slots: far too few for 8 concurrent sequences of up to ~65 tokens.
    eng, _runner = make_engine(
        num_blocks=16,
        max_num_seqs=8,
        max_num_batched_tokens=32,
        max_model_len=128,
        enable_prefix_caching=caching,
    )
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(max_tokens[i]))
    check_against_reference(run_all(eng), prompts, max_tokens)
    assert eng.stats.num_preemptions > 0


def test_preempted_sequence_recomputes_its_outputs():
    eng, runner = make_engine(
        num_blocks=6, max_num_seqs=2, max_num_batched_tokens=16, max_model_len=64, enable_prefix_caching=False
    )
    eng.add_request("a", [1, 2, 3], greedy(20))
    eng.add_request("b", [4, 5, 6], greedy(20))
    outs = run_all(eng)
    assert eng.stats.num_preemptions > 0
    # some prefill after a preemption covered generated tokens: start=0 and n > prompt length
    assert any(start == 0 and n > 3 for b in runner.batches for (_, start, n, _) in b)
    for rid, p in (("a", [1, 2, 3]), ("b", [4, 5, 6])):
        assert list(outs[rid].outputs[0].token_ids) == reference_greedy(p, 20)


def test_prefix_caching_reports_hits_and_shares_blocks():
    shared = list(range(1, 22))  # 21 tokens: 5 full blocks of 4
    eng, _runner = make_engine(max_num_batched_tokens=64)
    eng.add_request("first", shared, greedy(3))
    outs = run_all(eng)
    assert outs["first"].num_cached_tokens == 0
    # same prompt again: all 5 full blocks hit
    eng.add_request("again", shared, greedy(3))
    # a prompt that is exactly 5 blocks long must still compute its last token: only 4 blocks hit
    eng.add_request("exact", shared[:20], greedy(3))
    # a diverging prompt shares the first 2 blocks
    eng.add_request("diverge", shared[:9] + [60, 61, 62, 63], greedy(3))
    outs = run_all(eng)
    assert outs["again"].num_cached_tokens == 20
    assert outs["exact"].num_cached_tokens == 16
    assert outs["diverge"].num_cached_tokens == 8
    assert list(outs["again"].outputs[0].token_ids) == reference_greedy(shared, 3)
    assert list(outs["exact"].outputs[0].token_ids) == reference_greedy(shared[:20], 3)
    assert eng.stats.num_cached_tokens == 44


def test_prefix_cache_shared_blocks_within_a_step():
    prompt = list(range(1, 18))  # 17 tokens -> 4 full blocks
    eng, _runner = make_engine(max_num_batched_tokens=64)
    eng.add_request("x", prompt, greedy(4))
    eng.add_request("y", prompt, greedy(4))
    eng.step()
    seqs = eng.scheduler.running
    assert len(seqs) == 2
    a, b = seqs
    assert a.block_table[:4] == b.block_table[:4]  # same physical blocks
    assert a.block_table[4] != b.block_table[4]  # the partial block is private
    assert all(eng.block_manager.ref_counts[blk] == 2 for blk in a.block_table[:4])
    assert b.num_cached_tokens == 16
    outs = run_all(eng)
    assert outs["y"].num_cached_tokens == 16
    assert (
        list(outs["x"].outputs[0].token_ids)
        == list(outs["y"].outputs[0].token_ids)
        == reference_greedy(prompt, 4)
    )


def test_prefix_cache_eviction_under_pressure():
    # Many distinct prompts through a tiny pool: cached blocks get evicted and reused; the runner checks
    # every read, so a stale hit would fail.
    prompts = random_prompts(40, lo=8, hi=24, seed=5)
    prompts += [p[:] for p in prompts[:10]]  # repeats that may or may not still be cached
    max_tokens = [6] * len(prompts)
    eng, _ = make_engine(num_blocks=24, max_num_seqs=4, max_num_batched_tokens=32)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(6))
    check_against_reference(run_all(eng), prompts, max_tokens)


def test_n_children_share_prompt_and_differ():
    prompt = list(range(5, 26))  # 21 tokens
    eng, _runner = make_engine()
    eng.add_request("r", prompt, SamplingParams(n=3, temperature=0.8, max_tokens=8, seed=7))
    eng.step()
    a, b, c = eng.scheduler.running
    assert a.block_table[:5] == b.block_table[:5] == c.block_table[:5]
    out = run_all(eng)["r"]
    assert [o.index for o in out.outputs] == [0, 1, 2]
    toks = [tuple(o.token_ids) for o in out.outputs]
    assert len(set(toks)) == 3 and all(len(t) == 8 for t in toks)
    assert out.num_cached_tokens == 0  # the first child computed the prompt
    # child seeds: seed + index, so child 0 of seed 8 equals child 1 of seed 7
    eng.add_request("s", prompt, SamplingParams(n=1, temperature=0.8, max_tokens=8, seed=8))
    assert tuple(run_all(eng)["s"].outputs[0].token_ids) == toks[1]


def test_seeded_sampling_independent_of_batch():
    prompt = [3, 1, 4, 1, 5]
    params = SamplingParams(temperature=1.0, max_tokens=10, seed=1234)
    eng, _ = make_engine()
    eng.add_request("alone", prompt, params)
    alone = run_all(eng)["alone"].outputs[0].token_ids
    eng, _ = make_engine(max_num_seqs=3, max_num_batched_tokens=9, num_blocks=12)
    for i, p in enumerate(random_prompts(6, seed=9)):
        eng.add_request(f"other{i}", p, SamplingParams(max_tokens=12))
    eng.add_request("crowd", prompt, params)
    assert run_all(eng)["crowd"].outputs[0].token_ids == alone


def test_unseeded_sampling_follows_engine_seed():
    def run(seed):
        eng, _ = make_engine(seed=seed)
        for i in range(4):
            eng.add_request(str(i), [1, 2, 3], SamplingParams(max_tokens=6))
        return [
            tuple(o.outputs[0].token_ids) for o in sorted(run_all(eng).values(), key=lambda o: o.request_id)
        ]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_rng_seeds_and_output_index_in_batch():
    eng, runner = make_engine()
    eng.add_request("a", [1, 2], SamplingParams(n=2, max_tokens=3, seed=10))
    batch = eng.scheduler.schedule()
    assert [s.rng_seed for s in batch.seqs] == [10, 11]
    assert [s.output_index for s in batch.seqs] == [0, 0]
    eng.scheduler.update(batch, runner.execute(batch))
    batch = eng.scheduler.schedule()
    assert [s.output_index for s in batch.seqs] == [1, 1]


def test_abort_request_frees_blocks():
    eng, _ = make_engine()
    eng.add_request("a", list(range(1, 30)), greedy(50))
    eng.add_request("b", list(range(2, 31)), greedy(5))
    eng.step()
    eng.abort_request("a")
    eng.abort_request("missing")  # ignored
    outs = run_all(eng)
    assert set(outs) == {"b"}


def test_step_without_requests_returns_nothing():
    eng, _ = make_engine()
    assert eng.step() == [] and not eng.has_unfinished_requests()


def test_stats_and_metrics():
    eng, _ = make_engine()
    eng.add_request("a", [1, 2, 3], greedy(4), arrival_time=1.0)
    out = run_all(eng)["a"]
    m = out.metrics
    assert m.arrival_time == 1.0
    assert m.first_scheduled_time <= m.first_token_time <= m.last_token_time <= m.finished_time
    assert eng.stats.num_steps == 4 and eng.stats.num_generated_tokens == 4
    assert eng.stats.num_scheduled_tokens == 3 + 3


class FailingOnce(CacheCheckingRunner):
    """Raises on one step after writing part of the cache (as an interrupted device step could)."""

    def __init__(self, *a, fail_at=2, **kw):
        super().__init__(*a, **kw)
        self.calls, self.fail_at = 0, fail_at

    def execute(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            for s in batch.seqs:  # garbage in the slots this step would have written
                for pos in range(s.start, s.end):
                    self.cache[self.slot(s.block_table, pos)] = (-7, pos)
            raise KeyboardInterrupt
        return super().execute(batch)


def test_failed_step_is_recovered_without_stale_cache_hits():
    prompts = [list(range(1, 30)), list(range(1, 30)), list(range(3, 20))]
    runner = FailingOnce(64, 4, max_num_seqs=4, max_num_batched_tokens=16)
    eng, _ = make_engine(num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=16, runner=runner)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(6))
    eng.step()
    with pytest.raises(KeyboardInterrupt):
        eng.step()
    assert eng.get_num_unfinished_requests() == 3
    check_against_reference(run_all(eng), prompts, [6, 6, 6])
    # a new request with the same prefix must not hit blocks of the failed step
    eng.add_request("again", prompts[0], greedy(6))
    assert list(run_all(eng)["again"].outputs[0].token_ids) == reference_greedy(prompts[0], 6)


@pytest.mark.parametrize("host_slots", [0, 6])
@pytest.mark.parametrize("trial", range(6))
def test_random_configs_match_unconstrained_run(trial, host_slots):
    """Random pools, budgets, block sizes, shared prefixes, n > 1, seeded and unseeded sampling: every
    constrained run (chunking, preemption, eviction; with host slots: preemption by swap and the host prefix
    cache, both falling short of slots at times) gives the outputs of a roomy run."""
    rng = random.Random(100 + trial)
    bs = rng.choice([1, 2, 4, 16])
    base = [rng.randrange(VOCAB) for _ in range(40)]
    reqs = []
    for i in range(rng.randint(5, 25)):
        p = base[: rng.randint(0, 40)] + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))]
        kind = rng.random()
        if kind < 0.2:
            sp = greedy(rng.randint(1, 30))
        elif kind < 0.4:
            sp = SamplingParams(
                n=rng.randint(1, 2), max_tokens=rng.randint(1, 30), logprobs=2, prompt_logprobs=1
            )
        elif kind < 0.7:
            sp = SamplingParams(n=rng.randint(1, 3), max_tokens=rng.randint(1, 30), seed=rng.randrange(1000))
        else:
            sp = SamplingParams(
                n=rng.randint(1, 3), max_tokens=rng.randint(1, 30), min_tokens=1, stop_token_ids=[5]
            )
        reqs.append((str(i), p, sp))

    def run(num_blocks, max_num_seqs, budget, caching, **host):
        eng, _ = make_engine(
            num_blocks=num_blocks,
            block_size=bs,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=budget,
            max_model_len=128,
            enable_prefix_caching=caching,
            seed=trial,
            **host,
        )
        for rid, p, sp in reqs:
            eng.add_request(rid, p, sp)
        outs = run_all(eng)
        return eng, {
            rid: (
                [(tuple(c.token_ids), c.finish_reason, c.stop_reason, c.logprobs) for c in o.outputs],
                o.prompt_logprobs,
            )
            for rid, o in outs.items()
        }

    _, want = run(4096, 64, 4096, False)
    need = max(-(-(len(p) + sp.max_tokens) // bs) for _, p, sp in reqs)
    caching = rng.random() < 0.7
    host = {"num_host_blocks": host_slots, "host_prefix_cache": caching,
            "preemption_mode": "swap"} if host_slots else {}
    _eng, got = run(need + rng.randint(0, 3 * need), rng.randint(1, 6), rng.randint(6, 40), caching, **host)
    assert got == want
