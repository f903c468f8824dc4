"""background_compile (the CPU's default): start-up compiles the buckets of at most BACKGROUND_STARTUP_TOKENS tokens with
the greedy and plain-sampling samplers; every other start-up program compiles on a background thread, and a step
that needs one first waits for it (never compiling anything itself). The background thread executes each program it
compiled once, on an all-padding step, while steps may be running."""

from __future__ import annotations

import time

import numpy as np
import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.engine_args import BACKGROUND_STARTUP_TOKENS, EngineArgs
from jaxllm.runner.programs import ForwardKey, SampleKey
from jaxllm.runner.sampler_config import FILTER_VARIANTS, STARTUP_CONFIGS

SMALL = {"skip_tokenizer_init": True, "max_num_seqs": 4, "max_num_batched_tokens": 64}


def test_cpu_compiles_small_buckets_first_and_the_rest_in_the_background(llama_dir):
    llm = LLM(str(llama_dir[0]), **SMALL)
    runner = llm.llm_engine.runner
    assert runner.background_compile and runner.max_seq_len_to_capture == BACKGROUND_STARTUP_TOKENS
    startup = set(runner.startup_keys())
    assert {k.bucket.num_tokens for k in startup if isinstance(k, ForwardKey)} == {8} == {BACKGROUND_STARTUP_TOKENS}
    # plain sampling only: greedy tokens come from the forward itself (no greedy sampler without speculation)
    assert {k.config for k in startup if isinstance(k, SampleKey)} == {c for c in STARTUP_CONFIGS[:2] if not c.greedy_only}
    deferred = runner.deferred_keys()
    assert {k.bucket.num_tokens for k in deferred if isinstance(k, ForwardKey)} == {16, 32, 64}
    assert not startup & set(deferred) and set(runner.programs.compiled) == startup
    before = runner.num_compilations
    assert before == len(startup) + len(deferred)  # compiled or compiling: nothing is left for generate
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (50, 3, 20)]
    greedy = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    llm.generate(prompts, SamplingParams(temperature=0.8, top_p=0.9, logprobs=2, max_tokens=4), use_tqdm=False)
    runner.programs.wait_background()
    assert set(runner.programs.compiled) == startup | set(deferred) and runner.num_compilations == before
    eager = LLM(str(llama_dir[0]), background_compile=False, **SMALL)
    # and the single-filter samplers, which the all-filters one serves with background_compile
    filters = {SampleKey(k.num_seqs, c) for k in startup | set(deferred) if isinstance(k, SampleKey)
               for c in FILTER_VARIANTS}
    assert set(eager.llm_engine.runner.programs.compiled) == startup | set(deferred) | filters
    again = eager.generate(prompts, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in again] == [o.outputs[0].token_ids for o in greedy]


def test_background_first_runs_write_nothing_and_wait_while_steps_run(llama_dir):
    llm = LLM(str(llama_dir[0]), **SMALL)
    runner = llm.llm_engine.runner
    runner.programs.wait_background()
    # idle: every program compiled in the background was executed once there, and before them the start-up
    # forward on the warm-up step (its attention loop), writing nothing to the cache
    assert runner.background_first_runs == len(runner.deferred_keys()) + 1 > 4
    assert all(not np.any(np.asarray(c, np.float32)) for c in runner.kv_caches)
    runner.last_step_time = time.perf_counter()  # a step just ran: generate is running
    filters = [SampleKey(4, c) for c in FILTER_VARIANTS]
    runner.programs.compile_in_background(filters)
    runner.programs.wait_background()
    assert all(k in runner.programs for k in filters)
    assert runner.background_first_runs == len(runner.deferred_keys()) + 1


def test_background_compile_is_a_bool_and_resolves_by_platform():
    with pytest.raises(TypeError, match="background_compile"):
        EngineArgs.from_kwargs({"background_compile": "yes"})
    args = EngineArgs.from_kwargs({})
    assert args.resolve("cpu", 512).background_compile is True
    assert args.resolve("gpu", 512).background_compile is False  # opt-in on GPUs
    assert EngineArgs.from_kwargs({"background_compile": True}).resolve("gpu", 512).background_compile is True
    # the processes of a multi-host engine run the same programs each step: everything is compiled up front
    assert args.resolve("gpu", 512, num_processes=2).background_compile is False
    assert args.resolve("cpu", 512, num_processes=2).background_compile is True
    assert EngineArgs.from_kwargs({"background_compile": False}).resolve("cpu", 512).background_compile is False


def test_max_seq_len_to_capture_sets_the_startup_buckets_with_background_compile(llama_dir):
    llm = LLM(str(llama_dir[0]), max_seq_len_to_capture=16, **SMALL)
    runner = llm.llm_engine.runner
    assert {k.bucket.num_tokens for k in runner.programs.compiled if isinstance(k, ForwardKey)} == {8, 16}
    assert {k.bucket.num_tokens for k in runner.deferred_keys() if isinstance(k, ForwardKey)} == {32, 64}


def test_background_compiles_survive_sleep_mode(llama_dir):
    """Programs compile against the parameters' and the cache plan's shapes: a background compile that runs
    while sleep mode has dropped both still serves the steps after wake_up."""
    llm = LLM(str(llama_dir[0]), enable_sleep_mode=True, **SMALL)
    llm.sleep(level=1)
    llm.llm_engine.runner.programs.wait_background()
    llm.wake_up()
    out = llm.generate([{"prompt_token_ids": list(range(1, 40))}], SamplingParams(temperature=0, max_tokens=3),
                       use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 3
