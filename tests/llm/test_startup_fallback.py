"""background_compile on a GPU (run here on the CPU by declaring the CPU a fallback platform): start-up compiles the
buckets every step fits (the decode bucket of max_num_seqs rows and the largest) with every start-up sampler
variant of their rows; the rest compile on background threads, and until a step's own bucket is ready it runs padded
into the smallest ready one, never waiting for a compile. Greedy outputs match the all-up-front mode."""

from __future__ import annotations

import threading
import time

import pytest

from jaxllm import LLM, SamplingParams
from jaxllm.runner.buckets import Bucket, BucketLadder
from jaxllm.runner.model_runner import ModelRunner
from jaxllm.runner.programs import ForwardKey, Programs, SampleKey
from jaxllm.runner.sampler_config import FILTER_CONFIG, FILTER_VARIANTS, STARTUP_CONFIGS, TOP_P_CONFIG

GPU_LIKE = {"skip_tokenizer_init": True, "max_num_seqs": 16, "max_num_batched_tokens": 64}
PROMPTS = [{"prompt_token_ids": list(range(1, n))} for n in (50, 3, 20)]
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def test_fallback_buckets_hold_every_step_and_pick_ready_takes_the_smallest_ready():
    ladder = BucketLadder(8192, 256)
    assert ladder.fallback_buckets() == [Bucket(256, 256), Bucket(8192, 256)]
    assert BucketLadder(64, 16).fallback_buckets() == [Bucket(16, 16), Bucket(64, 16)]
    assert BucketLadder(64, 64).fallback_buckets() == [Bucket(64, 64)]  # one bucket serves both
    fallback = set(ladder.fallback_buckets())
    assert ladder.pick_ready(10, 3, fallback.__contains__) == Bucket(256, 256)
    assert ladder.pick_ready(300, 10, fallback.__contains__) == Bucket(8192, 256)
    assert ladder.pick_ready(10, 3, lambda b: True) == Bucket(16, 16)
    assert ladder.pick_ready(300, 10, lambda b: False) == Bucket(512, 256)  # none ready: the smallest (waits)
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        ladder.pick_ready(10, 257, lambda b: True)


def test_background_workers_compile_in_parallel_and_a_failed_program_is_never_ready():
    """A failed background compile is never ready; a step that needs it compiles it again, alone (on a GPU the
    failure may be the autotuner's memory, shared with steps and other compiles); an error that persists is raised."""
    started, release, fails = [], threading.Event(), {32: 2, 16: 1}

    def compile_fn(key):
        started.append(key)
        release.wait(5)
        if fails.get(key.bucket.num_tokens, 0) > 0:
            fails[key.bucket.num_tokens] -= 1
            raise RuntimeError("no such kernel")
        return key.bucket.num_tokens

    programs = Programs(compile_fn)
    keys = [ForwardKey(Bucket(t, 4)) for t in (8, 16, 32)]
    programs.compile_in_background(keys, workers=3)
    deadline = time.time() + 5
    while len(started) < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(k.bucket.num_tokens for k in started) == [8, 16, 32]  # all three at once
    assert not any(programs.ready(k) for k in keys)
    release.set()
    while not all(programs._background[k].done() for k in keys) and time.time() < deadline:
        time.sleep(0.01)
    assert [programs.ready(k) for k in keys] == [True, False, False]
    assert programs.get(keys[0]) == 8
    assert programs.get(keys[1]) == 16  # compiled again
    with pytest.raises(RuntimeError, match="no such kernel"):
        programs.get(keys[2])


def test_a_sampler_variant_still_compiling_gives_way_to_a_ready_one_that_covers_it():
    release = threading.Event()
    programs = Programs(lambda key: release.wait(5) and key)
    programs.compiled[SampleKey(8, FILTER_CONFIG)] = "filter"
    programs.compile_in_background([SampleKey(8, TOP_P_CONFIG)])
    assert programs.sampler_variant(8, TOP_P_CONFIG) == FILTER_CONFIG  # the step need not wait
    release.set()
    programs.wait_background()
    assert programs.sampler_variant(8, TOP_P_CONFIG) == TOP_P_CONFIG


@pytest.fixture
def gpu_like(monkeypatch):
    """The GPU start-up plan on the CPU; background compiles held back (recorded) so the test decides when."""
    monkeypatch.setattr(ModelRunner, "fallback_platforms", ("cpu", "gpu"))
    held = []
    monkeypatch.setattr(Programs, "compile_in_background",
                        lambda self, keys, before=None, workers=1: held.append((self, keys)))
    return held


def test_gpu_start_up_compiles_the_fallback_buckets_and_steps_use_only_ready_programs(llama_dir, gpu_like,
                                                                                        monkeypatch):
    llm = LLM(str(llama_dir[0]), background_compile=True, **GPU_LIKE)
    runner = llm.llm_engine.runner
    assert runner.fallback_startup and runner._pick_ready
    startup = set(runner.startup_keys())
    assert set(runner.programs.compiled) == startup
    assert {k.bucket.num_tokens for k in startup if isinstance(k, ForwardKey)} == {16, 64}
    sample = {c for c in STARTUP_CONFIGS if not c.greedy_only}  # every variant, the single-filter ones too
    assert {(k.num_seqs, k.config) for k in startup if isinstance(k, SampleKey)} == {(16, c) for c in sample}
    [(_, deferred)] = gpu_like
    assert deferred == runner.deferred_keys() and not startup & set(deferred)
    assert {k.bucket.num_tokens for k in deferred if isinstance(k, ForwardKey)} == {8, 32}
    # (the CPU never compiles the single-filter variants in the background: the all-filters one serves them)
    assert {(k.num_seqs, k.config) for k in deferred if isinstance(k, SampleKey)} == {
        (8, c) for c in sample if c not in FILTER_VARIANTS}

    used = []
    pick = runner.step_bucket
    monkeypatch.setattr(runner, "step_bucket", lambda batch: used.append(pick(batch)) or used[-1])
    greedy = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    top_p = llm.generate(PROMPTS, SamplingParams(temperature=0.8, top_p=0.9, seed=1, max_tokens=4), use_tqdm=False)
    assert {b.num_tokens for b in used} == {16, 64}  # decode steps of 3 rows padded to 16, prefills to 64
    assert set(runner.programs.compiled) == startup  # nothing compiled during generate
    assert all(len(o.outputs[0].token_ids) == 4 for o in top_p)

    monkeypatch.undo()  # the real background compile (and the real plan's platform list)
    runner.programs.compile_in_background(deferred, workers=2)
    runner.programs.wait_background()
    used.clear()
    monkeypatch.setattr(runner, "step_bucket", lambda batch: used.append(pick(batch)) or used[-1])
    again = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert Bucket(8, 8) in used  # once compiled, a 3-row decode step takes the 8-token bucket
    eager = LLM(str(llama_dir[0]), background_compile=False, **GPU_LIKE)
    every = eager.llm_engine.runner.programs.compiled
    assert set(every) == startup | set(deferred) | {SampleKey(8, c) for c in FILTER_VARIANTS}
    reference = eager.generate(PROMPTS, GREEDY, use_tqdm=False)
    tokens = [[o.outputs[0].token_ids for o in outs] for outs in (greedy, again, reference)]
    assert tokens[0] == tokens[1] == tokens[2]


def test_a_multi_process_engine_runs_each_step_in_its_own_bucket(llama_dir, gpu_like):
    llm = LLM(str(llama_dir[0]), background_compile=True, **GPU_LIKE)
    runner = llm.llm_engine.runner
    runner._plan_startup(None, "gpu", num_processes=2)
    assert runner.fallback_startup and not runner._pick_ready
    batch = type("Batch", (), {"num_tokens": 3, "num_seqs": 3, "seqs": []})()
    assert runner.step_bucket(batch) == Bucket(8, 8)  # not compiled: the step would wait for it
    runner._plan_startup(None, "gpu", num_processes=1)
    assert runner.step_bucket(batch) == Bucket(16, 16)
    assert set(FILTER_VARIANTS) <= {k.config for k in runner.startup_keys() if isinstance(k, SampleKey)}
    assert set(FILTER_VARIANTS) <= {k.config for k in runner.deferred_keys() if isinstance(k, SampleKey)}


@pytest.mark.gpu
def test_a_gpu_compiles_the_fallback_buckets_with_background_compile(llama_dir):
    llm = LLM(str(llama_dir[0]), kv_cache_memory_bytes=64 << 20, background_compile=True, **GPU_LIKE)
    runner = llm.llm_engine.runner
    assert runner.background_compile and runner.fallback_startup and runner._pick_ready
    assert {k.bucket.num_tokens for k in runner.programs.compiled if isinstance(k, ForwardKey)} == {16, 64}
    outs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [6, 6, 6]
    runner.programs.wait_background()
    assert set(runner.programs.compiled) == set(runner.startup_keys()) | set(runner.deferred_keys())
