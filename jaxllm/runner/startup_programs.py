"""Which step programs a ModelRunner compiles, and when (mixed into ModelRunner), and which bucket a step runs in.

At start-up every (bucket, sampler variant) program of ``startup_keys`` is compiled in parallel threads, then each
is executed once on a step that writes nothing (``_run_each_program_once``) so first-execution costs land at
start-up. With ``background_compile`` a few are compiled up front and ``deferred_keys`` follow on background
threads, which execute each once as well before a step can take it, unless steps are running then. Which few: on
the CPU the smallest buckets (a short prompt's prefill and decode: ``BACKGROUND_STARTUP_TOKENS``); on a GPU the
buckets every step fits (``BucketLadder.fallback_buckets``: the decode bucket of ``max_num_seqs`` rows and the
largest) with every start-up sampler variant of their rows, so that no step waits for a compile: until its own
bucket is ready a step runs padded into the smallest ready one (``step_bucket``). On a GPU the forward programs
dominate start-up (an 8B model's, cold: several seconds each, and with int4 weights on Hopper each bucket up to
256 tokens brings its own Mosaic GPU kernels, which jaxlib compiles one at a time), and padding a decode step
into a larger decode bucket costs little where the weights' reads dominate. The grammar-bitmask sampler variants
are compiled at start-up when structured outputs are possible, and the rarer ones in the background when a
constrained request needing them arrives."""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import jax
import numpy as np

from jaxllm.engine.batch import ScheduledBatch
from jaxllm.engine_args import BACKGROUND_STARTUP_TOKENS
from jaxllm.runner.buckets import Bucket
from jaxllm.runner.programs import ForwardKey, ProgramKey, SampleKey
from jaxllm.runner.sampler_config import FILTER_VARIANTS, SAMPLE_CONFIG, SamplerConfig, startup_configs
from jaxllm.runner.sampling_metadata import start_up_variant

logger = logging.getLogger("jaxllm")
BUSY_SECONDS = 1.0  # a runner that dispatched or fetched a step this recently is generating
# background compile threads on a GPU host (half its cores at most): the step loop needs host cores, and each
# compile's autotuner takes device memory from what the KV cache left
MAX_BACKGROUND_WORKERS = 4


class StartupPrograms:
    """Mixed into ModelRunner (which owns ``programs``, ``ladder``, ``kernels``, ``spec``, ``cfg``, the cache and
    the padding-step builders)."""

    # platforms whose start-up compiles the fallback buckets with background_compile (the CPU: the smallest)
    fallback_platforms: tuple[str, ...] = ("gpu",)

    def _plan_startup(self, max_seq_len_to_capture: int | None, platform: str, num_processes: int) -> None:
        """Which buckets start-up compiles with ``background_compile``: ``max_seq_len_to_capture`` when given,
        else the fallback buckets on a GPU (``fallback_startup``) and the smallest on the CPU. Steps take the
        smallest ready bucket (``step_bucket``) in a single process only: the processes of a multi-host engine
        must run the same programs at each step, so there a step waits for its own bucket's programs."""
        self.max_seq_len_to_capture = max_seq_len_to_capture
        self.compiles_on_cpu = platform == "cpu"
        self.fallback_startup = (self.background_compile and max_seq_len_to_capture is None
                                 and platform in self.fallback_platforms)
        if self.background_compile and max_seq_len_to_capture is None and not self.fallback_startup:
            self.max_seq_len_to_capture = BACKGROUND_STARTUP_TOKENS
        self._pick_ready = self.background_compile and num_processes == 1
        # the CPU's steps compute on the cores a compile would take: one thread there
        self.background_workers = 1 if self.compiles_on_cpu else max(1, min(MAX_BACKGROUND_WORKERS,
                                                                         (os.cpu_count() or 2) // 2))

    def step_bucket(self, batch: ScheduledBatch) -> Bucket:
        """The bucket ``batch`` runs in: the smallest holding it, or while ``background_compile`` compiles the
        rest, the smallest holding it whose forward and plain sampler are ready (else the smallest: the step waits
        for its programs, ``Programs.get``)."""
        if not self._pick_ready:
            return self.ladder.pick(batch.num_tokens, batch.num_seqs)
        long_prefill = self.kernels.has_long_prefill(batch.seqs)
        return self.ladder.pick_ready(batch.num_tokens, batch.num_seqs,
                                      lambda b: self._bucket_ready(b, long_prefill))

    def _bucket_ready(self, bucket: Bucket, long_prefill: bool) -> bool:
        return (self.programs.ready(ForwardKey(bucket, long_prefill=long_prefill))
                and self.programs.ready(SampleKey(self.spec.num_rows(bucket), SAMPLE_CONFIG)))

    def _sample_rows(self, buckets: list[Bucket] | None = None) -> list[int]:
        """The sampler programs' row counts: every bucket's (of ``buckets``, default all) S, or its L with
        speculative decoding."""
        return sorted({self.spec.num_rows(b) for b in (self.ladder.buckets if buckets is None else buckets)})

    def startup_keys(self) -> list[ProgramKey]:
        """The programs compiled at start-up: each bucket's forward (up to ``max_seq_len_to_capture`` tokens), the
        long-prefill forwards, and the start-up sampler variants of every sequence bucket. With
        ``background_compile``: on a GPU the fallback buckets' forwards with every start-up sampler variant of
        their rows; on the CPU the plain-sampling ones of the buckets kept. The greedy variant is left out unless
        speculative decoding verifies drafts: the forward returns the greedy tokens itself."""
        if self.fallback_startup:
            buckets = self.ladder.fallback_buckets()
            return self._program_keys(buckets, self._sample_rows(buckets), startup_configs(self.logprobs_mode))
        cap = self.max_seq_len_to_capture
        buckets = [b for b in self.ladder.buckets if cap is None or b.num_tokens <= cap]
        if not self.background_compile:
            return self._program_keys(buckets, self._sample_rows(), startup_configs(self.logprobs_mode))
        return self._program_keys(buckets, self._sample_rows(buckets), startup_configs()[:2])

    def deferred_keys(self) -> list[ProgramKey]:
        """The start-up set's complement over every bucket and start-up sampler variant, smallest buckets first:
        what ``background_compile`` compiles once the engine is ready. On the CPU without the single-filter
        variants (``FILTER_VARIANTS``: ``FILTER_CONFIG`` serves their batches, and two cores are better spent on
        the buckets)."""
        early = set(self.startup_keys())
        configs = [c for c in startup_configs(self.logprobs_mode) if not (self.compiles_on_cpu and c in FILTER_VARIANTS)]
        keys = self._program_keys(self.ladder.buckets, self._sample_rows(), configs)
        return sorted((k for k in keys if k not in early), key=lambda k: (
            k.bucket.num_tokens if isinstance(k, ForwardKey) else k.num_seqs, isinstance(k, SampleKey)))

    def _program_keys(self, buckets: list[Bucket], sample_rows: list[int], configs) -> list[ProgramKey]:
        keys: list[ProgramKey] = [ForwardKey(b) for b in buckets]
        keys += [ForwardKey(b, long_prefill=True) for b in self.kernels.long_prefill_buckets(buckets)]
        configs = [c for c in configs if self.spec.enabled or not c.greedy_only]  # greedy: the forward's
        keys += [SampleKey(s, c) for s in sample_rows for c in configs]
        if self.spec.sampled_drafts:  # random rows verifying a draft model's sampled drafts
            keys += [SampleKey(s, c, sampled_drafts=True) for s in sample_rows for c in configs if c.random]
        if self.structured_outputs:
            keys += self._grammar_sample_keys(SAMPLE_CONFIG, rows=sample_rows)
        return keys

    def _grammar_sample_keys(self, *configs: SamplerConfig, rows: list[int] | None = None) -> list[SampleKey]:
        """The sampler variants ``configs`` with a grammar bitmask, for the row counts ``rows`` (default: every
        sequence bucket's)."""
        words = -(-self.cfg.vocab_size // 32)
        rows = self._sample_rows() if rows is None else rows
        return [SampleKey(s, dataclasses.replace(c, grammar_words=words)) for c in configs for s in rows]

    def prepare_structured_outputs(self, params=None) -> None:
        """A constrained request (SamplingParams ``params``) arrived: compile the grammar-bitmask sampler programs
        it will need that are not compiled yet, on a background thread while the steps of other requests run and
        the grammars compile: those of greedy and temperature rows (compiled at start-up with
        ``structured_outputs``), and those with min-p / top-k / top-p or logprobs when ``params`` uses them. A
        step that needs one before it is ready waits for it (``Programs.get``); penalties and wide sparse arrays
        compile their variant on first use."""
        if self._enforce_eager:
            return
        configs = {SAMPLE_CONFIG} if params is None else {
            SAMPLE_CONFIG, start_up_variant(params, self.cfg.vocab_size, self.logprobs_mode)}
        order = startup_configs(self.logprobs_mode).index
        self.programs.compile_in_background(self._grammar_sample_keys(*sorted(configs, key=order)))

    def warm_up(self) -> None:
        """Compile the start-up programs in parallel threads."""
        keys = self.startup_keys()
        logger.info("compiling %d programs (KV cache: %d blocks)", len(keys), self.num_blocks)
        self.programs.compile_all(keys, self._drop_long_prefill_programs)
        if self.kernels.prefill_split is None:  # dropped while others compiled
            self.programs.drop(k for k in self.programs.compiled if isinstance(k, ForwardKey) and k.long_prefill)

    def _drop_long_prefill_programs(self, key: ProgramKey, error: Exception) -> bool:
        """A program failed to compile: a long-prefill one whose implementation was the default falls back
        (``KernelPolicy.drop_long_prefill``); any other failure is raised."""
        if not (isinstance(key, ForwardKey) and key.long_prefill) or not self.kernels.drop_long_prefill(error):
            return False
        self.programs.drop(k for k in self.programs.compiled if isinstance(k, ForwardKey) and k.long_prefill)
        return True

    def _run_each_program_once(self) -> None:
        """Execute every compiled program once (``_run_program_once``), so that first-execution costs land at
        start-up, not in ``generate``. With ``background_compile`` a forward runs on the all-padding step, which
        skips its attention's key loop; the background thread runs it again on the warm-up step before its
        compiles (``_warm_up_attention_loops``), so ``LLM`` is ready that much sooner."""
        t0 = time.perf_counter()
        for key, fn in self.programs.compiled.items():
            self._run_program_once(key, fn, warm_up=not self.background_compile)
        self.first_run_seconds = time.perf_counter() - t0
        logger.info("ran each of %d programs once in %.1fs", len(self.programs), self.first_run_seconds)

    def _warm_up_attention_loops(self) -> None:
        """The background thread's first job: the start-up forwards on the warm-up step (their attention's key
        loop first runs there, not in a first decode step), unless steps are running."""
        for key, fn in list(self.programs.compiled.items()):
            if isinstance(key, ForwardKey):
                self._first_run_in_background(key, fn)

    def _first_run_in_background(self, key: ProgramKey, fn) -> None:
        """``Programs.first_run_fn``: execute a program the background thread compiled once there
        (``_run_program_once``), unless a step was dispatched or fetched in the last ``BUSY_SECONDS``: a
        forward's first run holds the cache, so the next step of a running ``generate`` would wait for it (up to
        0.5 s for the largest CPU bucket); the first step that uses such a program pays its first execution."""
        if time.perf_counter() - self.last_step_time < BUSY_SECONDS:
            logger.debug("steps are running: %s is not run in the background", key)
            return
        self._run_program_once(key, fn)
        self.background_first_runs += 1

    def _run_program_once(self, key: ProgramKey, fn, warm_up: bool = True) -> None:
        """Execute ``fn``, the program of ``key``, on a step that writes nothing to the cache and wait for it: one
        at a time, so no two programs' temporaries live together. A forward runs on the warm-up step (one token
        attending to cache slot 0, ``warm_up_step_inputs``, so its attention's key loop runs too), or with
        ``warm_up=False`` on the all-padding step. What a first execution pays: CUDA command buffers and Mosaic
        kernels loaded on the GPU; on the CPU, the runtime of each YNNPACK matmul fusion (0.1-0.25 s a forward
        program on 2 cores). The background compile thread calls it too (``_first_run_in_background``), while
        steps may run: a forward takes the cache (donated) and gives it back under ``device_lock``, and is skipped
        while sleep mode has freed the weights or the cache (the first step after ``wake_up`` pays its first
        execution)."""
        if isinstance(key, ForwardKey):
            with self.device_lock:
                if not (self.weights_on_device and self.kv_cache_on_device):
                    return
                self.kv_caches, out, _, _ = fn(self.params, self.kv_caches, self._padding_step(key.bucket, warm_up),
                                               self._prev_tokens, self._lora_stacks(),
                                               self._prompt_embeds_arg(key.bucket))
        else:
            logits = jax.device_put(np.zeros((key.num_seqs, self.cfg.vocab_size), np.float32), self._replicated)
            out = fn(logits, self._neutral_sampling(key.num_seqs, key.config),
                     *self._neutral_spec(key.num_seqs, key.sampled_drafts))
        jax.block_until_ready(out)

    @property
    def compile_seconds(self) -> float:
        return self.programs.compile_seconds

    @property
    def num_compilations(self) -> int:
        """Programs compiled so far or compiling in the background: step variants, prompt-logprob programs and
        the host tier's copies."""
        swap = 0 if self.host_kv is None else self.host_kv.num_compilations
        draft = 0 if self.draft is None else self.draft.num_compilations
        return self.programs.num_scheduled + self._prompt_lp._cache_size() + swap + draft
