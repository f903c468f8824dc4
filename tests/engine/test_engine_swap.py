"""The host tier through LLMEngine with the cache-checking fake runner: preemption by swap (forced, by cost,
falling back to recompute), the host prefix cache, and the host slots' accounting. Outputs must equal an
unconstrained reference run; a block copied wrong shows up in the fake's cache check."""

from __future__ import annotations

import pytest
from engine_fakes import CacheCheckingRunner, make_engine
from test_engine_scheduling import check_against_reference, greedy, random_prompts, run_all

from jaxllm.engine.host_tier import PreemptionCost


def run_preempting(num_host_blocks, caching=True, n=12, **kw):
    prompts = random_prompts(n, lo=5, hi=30, seed=2)
    max_tokens = [20 + i for i in range(n)]
    eng, runner = make_engine(num_blocks=16, max_num_seqs=8, max_num_batched_tokens=32, max_model_len=128,
                              enable_prefix_caching=caching, num_host_blocks=num_host_blocks, **kw)
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(max_tokens[i]))
    check_against_reference(run_all(eng), prompts, max_tokens)
    host = eng.block_manager.host
    assert host is None or host.num_free_slots == host.num_slots - len(host.cached)
    return eng, runner, prompts


@pytest.mark.parametrize("caching", [True, False])
def test_swap_preemption_keeps_outputs_exact_and_resumes(caching):
    eng, runner, prompts = run_preempting(64, caching, preemption_mode="swap")
    st = eng.stats
    assert st.num_preemptions > 0 and st.num_swap_preemptions == st.num_preemptions
    assert st.num_swapped_out_blocks > 0 and st.num_swapped_in_blocks == st.num_swapped_out_blocks
    # a resumed sequence is never recomputed from position 0 past its prompt
    lens = {i: len(p) for i, p in enumerate(prompts)}
    assert not any(start == 0 and n > lens[sid] for b in runner.batches for (sid, start, n, _) in b)


def test_recompute_mode_never_swaps():
    eng, _, _ = run_preempting(64, preemption_mode="recompute")
    assert eng.stats.num_preemptions > 0
    assert eng.stats.num_swap_preemptions == 0 and eng.stats.num_swapped_out_blocks == 0


@pytest.mark.parametrize("cheap_copy", [True, False])
def test_cost_rule_picks_the_cheaper(cheap_copy):
    cost = PreemptionCost(copy_seconds_per_block=1e-9 if cheap_copy else 1.0, seconds_per_token=1e-6)
    eng, _, _ = run_preempting(64, preemption_cost=cost)
    assert eng.stats.num_preemptions > 0
    assert (eng.stats.num_swap_preemptions == eng.stats.num_preemptions) == cheap_copy
    assert (eng.stats.num_swap_preemptions == 0) == (not cheap_copy)


def test_preemption_cost_rule():
    cost = PreemptionCost(copy_seconds_per_block=1.0, seconds_per_token=0.1, seconds_per_token_pair=0.01)
    assert not cost.prefer_swap(2, 10)  # copy 4 s vs recompute 1 + 1 s
    assert cost.prefer_swap(2, 20)  # copy 4 s vs recompute 2 + 4 s


def test_full_host_falls_back_to_recompute():
    eng, _, _ = run_preempting(3, preemption_mode="swap")
    st = eng.stats
    assert st.num_preemptions > st.num_swap_preemptions  # some victims did not fit in 3 slots


def shared_prefix_runs(num_host_blocks, host_prefix_cache):
    """Three 24-token prefixes (6 blocks each) over a 14-block device cache, each asked twice in turn."""
    prefixes = random_prompts(3, lo=24, hi=24, seed=5)
    eng, _ = make_engine(num_blocks=14, max_num_seqs=2, max_num_batched_tokens=32,
                              num_host_blocks=num_host_blocks, host_prefix_cache=host_prefix_cache)
    cached = []
    for round_ in range(2):
        for k, pre in enumerate(prefixes):
            prompt = pre + [round_, k]
            eng.add_request(f"{round_}-{k}", prompt, greedy(4))
            out = run_all(eng)[f"{round_}-{k}"]
            check_against_reference({"0": out}, [prompt], [4])
            cached.append(out.num_cached_tokens)
    return eng, cached


def test_host_prefix_cache_hits_prefixes_larger_than_the_device_cache():
    eng, cached = shared_prefix_runs(0, False)
    assert cached[3] == 0  # the first prefix was evicted from the device
    eng, cached = shared_prefix_runs(32, True)
    assert cached[:3] == [0, 0, 0] and cached[3:] == [24, 24, 24]
    host = eng.block_manager.host
    assert host.prefix_hits >= 18 and eng.stats.num_host_prefix_cache_hits == host.prefix_hits
    assert eng.reset_prefix_cache() and not host.cached and host.num_free_slots == host.num_slots


def test_small_host_prefix_cache_evicts_lru_and_stays_exact():
    eng, _ = shared_prefix_runs(5, True)
    assert len(eng.block_manager.host.cached) == 5


def test_abort_of_a_swapped_sequence_frees_its_slots():
    eng, _ = make_engine(num_blocks=6, max_num_seqs=2, max_num_batched_tokens=16, max_model_len=64,
                         enable_prefix_caching=False, num_host_blocks=8, preemption_mode="swap")
    eng.add_request("a", [1, 2, 3], greedy(20))
    eng.add_request("b", [4, 5, 6], greedy(20))
    host = eng.block_manager.host
    while not any(s.host_blocks for s in eng.scheduler.waiting):
        eng.step()
    names = {m.name: m.value for m in eng.get_metrics() if not hasattr(m, "buckets")}
    assert names["vllm:num_requests_swapped"] == 1 and names["vllm:cpu_cache_usage_perc"] > 0
    eng.abort_request(["a", "b"])
    while eng.step() or eng._steps:
        pass
    assert host.num_free_slots == host.num_slots


def test_bad_host_tier_options():
    with pytest.raises(ValueError, match="preemption_mode 'swapp'"):
        make_engine(num_host_blocks=4, preemption_mode="swapp")
    with pytest.raises(ValueError, match="preemption_mode='swap' needs a host tier"):
        make_engine(preemption_mode="swap")
    with pytest.raises(ValueError, match="host_prefix_cache needs"):
        make_engine(host_prefix_cache=True)


class FailingOnSwap(CacheCheckingRunner):
    """Raises on the first step that carries swap-outs, before making any copy."""

    failed = False

    def execute(self, batch):
        if batch.swap_out and not self.failed:
            self.failed = True
            raise KeyboardInterrupt
        return super().execute(batch)


def test_failed_step_with_copies_recomputes_swapped_sequences():
    prompts = random_prompts(8, lo=5, hi=30, seed=2)
    max_tokens = [20 + i for i in range(8)]
    runner = FailingOnSwap(16, 4, 8, 32)
    eng, _ = make_engine(num_blocks=16, max_num_seqs=8, max_num_batched_tokens=32, runner=runner,
                         num_host_blocks=64, host_prefix_cache=True, preemption_mode="swap")
    for i, p in enumerate(prompts):
        eng.add_request(str(i), p, greedy(max_tokens[i]))
    with pytest.raises(KeyboardInterrupt):
        while eng.has_unfinished_requests():
            eng.step()
    assert runner.failed
    check_against_reference(run_all(eng), prompts, max_tokens)
    assert eng.stats.num_swap_preemptions > 0
