"""Sleep mode (device memory really returned, outputs unchanged after wake-up), apply_model, collective_rpc and
priority scheduling on an LLM of its own (these tests change its weights and free its memory)."""

from __future__ import annotations

import jax
import pytest
from flax import nnx

from jaxllm import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
PROMPTS = ["Hello world", "The quick brown fox"]


@pytest.fixture(scope="module")
def llm(llama_dir):
    return LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True,
               scheduling_policy="priority", enable_sleep_mode=True)


def live_bytes() -> int:
    return sum(a.nbytes for a in jax.live_arrays())


def tokens(llm):
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY, use_tqdm=False)]


def test_sleep_returns_device_memory_and_wake_up_restores_outputs(llm):
    ref = tokens(llm)
    runner = llm.llm_engine.runner
    weight_bytes = sum(p.nbytes for p in runner.params)
    cache_bytes = sum(c.nbytes for c in runner.kv_caches)
    awake = live_bytes()
    for level in (1, 2):
        llm.sleep(level=level)
        assert llm.is_sleeping()
        assert awake - live_bytes() >= weight_bytes + cache_bytes  # both really freed on the device
        with pytest.raises(RuntimeError, match="asleep"):
            llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        llm.wake_up(tags=["weights"])  # level 1: from host memory; level 2: read from the checkpoint again
        assert live_bytes() - (awake - weight_bytes - cache_bytes) >= weight_bytes
        with pytest.raises(RuntimeError, match="kv_cache"):
            llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        llm.wake_up(tags=["kv_cache"])
        assert not llm.is_sleeping() and live_bytes() >= awake - 1024
        assert tokens(llm) == ref, f"level {level}"
    with pytest.raises(ValueError, match="sleep level must be 1 or 2"):
        llm.sleep(level=3)
    with pytest.raises(ValueError, match="wake_up tags"):
        llm.wake_up(tags=["cache"])


def test_sleep_needs_enable_sleep_mode(llama_llm):
    with pytest.raises(ValueError, match="enable_sleep_mode=True"):
        llama_llm.sleep()
    with pytest.raises(ValueError, match="enable_sleep_mode=True"):
        llama_llm.wake_up()
    assert not llama_llm.is_sleeping()


def test_sleep_resets_the_prefix_cache(llm):
    prompt = {"prompt_token_ids": list(range(1, 41))}
    llm.generate(prompt, GREEDY, use_tqdm=False)
    assert llm.generate(prompt, GREEDY, use_tqdm=False)[0].num_cached_tokens == 32
    llm.sleep()
    llm.wake_up()
    assert llm.generate(prompt, GREEDY, use_tqdm=False)[0].num_cached_tokens == 0  # the cache came back empty


def test_apply_model_and_collective_rpc(llm):
    ref = tokens(llm)
    assert llm.apply_model(lambda model: type(model).__name__) == [type(llm.llm_engine.runner.model()).__name__]

    def zero_weights(model):
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda x: x * 0, params))
        return len(jax.tree.leaves(params))

    (num_params,) = llm.apply_model(zero_weights)
    assert num_params > 0
    assert llm.reset_prefix_cache()
    zeroed = tokens(llm)
    assert zeroed != ref and all(t == zeroed[0][0] for seq in zeroed for t in seq)  # all-zero logits
    assert llm.collective_rpc("reload_weights") == [None]  # read from the checkpoint again (vLLM's name)
    assert llm.reset_prefix_cache()
    assert tokens(llm) == ref
    assert llm.collective_rpc(lambda runner, k: runner.num_blocks * k, args=(2,)) == [
        llm.llm_engine.runner.num_blocks * 2]
    assert llm.collective_rpc("check_awake") == [None]
    with pytest.raises(AttributeError, match="no method 'no_such_method'"):
        llm.collective_rpc("no_such_method")
    with pytest.raises(ValueError, match="timeout"):
        llm.collective_rpc("check_awake", timeout=1.0)
    with pytest.raises(ValueError, match="only parameter values may change|changed from"):
        llm.apply_model(lambda m: nnx.update(m, jax.tree.map(lambda x: x[:1], nnx.state(m, nnx.Param))))
    assert tokens(llm) == ref  # a rejected change leaves the weights alone


def test_priority_orders_requests(llm):
    prompts = [{"prompt_token_ids": [i + 1] * 8} for i in range(5)]
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    ref = llm.generate(prompts, params, use_tqdm=False)
    outs = llm.generate(prompts, params, priority=[4, 3, 2, 1, 0], use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in ref]
    first = [o.metrics.first_scheduled_time for o in outs]
    # max_num_seqs=2: the two most urgent (last two prompts) are admitted first, the least urgent last
    assert max(first[3:]) <= min(first[:3]) and first[0] == max(first)


def test_sleep_under_tensor_parallelism_keeps_shardings(llama_dir):
    llm = LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True,
              tensor_parallel_size=2, enable_sleep_mode=True)
    ref = tokens(llm)
    runner = llm.llm_engine.runner
    shardings = [p.sharding for p in runner.params]
    assert llm.get_world_size() == 2
    for level in (1, 2):
        llm.sleep(level=level)
        llm.wake_up()
        assert [p.sharding for p in runner.params] == shardings
        assert tokens(llm) == ref, f"level {level}"


@pytest.mark.gpu
def test_sleep_lowers_device_bytes_in_use(llm):
    """On a GPU: the allocator's bytes in use drop by the weights and the cache while asleep."""
    device = jax.devices()[0]
    runner = llm.llm_engine.runner
    released = sum(p.nbytes for p in runner.params) + sum(c.nbytes for c in runner.kv_caches)
    awake = device.memory_stats()["bytes_in_use"]
    llm.sleep(level=1)
    asleep = device.memory_stats()["bytes_in_use"]
    llm.wake_up()
    assert awake - asleep >= released, (awake, asleep, released)
    assert device.memory_stats()["bytes_in_use"] >= awake - 1024
