"""The runner's compiled programs: their keys, the cache of compiled executables, parallel compilation.

A step runs two programs: the forward of its bucket (``ForwardKey``) and the sampler of its sequence bucket and
sampler variant (``SampleKey``). Every program is compiled once per key; ``compile_all`` compiles many in threads
(XLA compiles outside the GIL) and logs each as it finishes, so a start-up cut short by a time limit shows which
programs were slow; ``compile_in_background`` compiles some on background threads while steps run (the grammar
sampler variants of structured outputs; the programs left out of start-up with ``background_compile``), ``ready``
says whether one can run without waiting (the runner then pads a step into a larger ready bucket), and ``get``
waits for one a step needs before it is ready. A program compiled in the background is also executed once
there (``first_run_fn``) before any step can take it: on the CPU, the first execution of a program builds the
runtime of each of its YNNPACK fusions (XLA's matmul library: a slinky pipeline per fusion, 0.1-0.25 s a forward
on 2 cores), which a first ``generate`` would otherwise pay in its first steps.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable

from jaxllm.runner.buckets import Bucket
from jaxllm.runner.sampler_config import SamplerConfig, cost_order, covers

logger = logging.getLogger("jaxllm")
_STOP_BACKGROUND = threading.Event()  # set at interpreter exit: queued background compiles are cancelled
_BACKGROUND_THREADS: set[threading.Thread] = set()


def _compile_queued(programs: weakref.ref, queued: collections.deque,
                    before: weakref.WeakMethod | None = None) -> None:
    """A background worker's loop: ``before()`` (when given and its runner still lives), then compile the queued
    (key, future) pairs it takes from the front of ``queued`` (shared by the workers) until the queue is empty;
    once the interpreter exits or the ``Programs`` is gone the rest are cancelled."""
    job = None if before is None else before()
    if job is not None:
        try:
            job()
        except Exception:  # a warm-up only: the compiles go on, the error goes to the log
            logger.exception("the background thread's first job failed")
        del job
    while True:
        try:
            key, future = queued.popleft()
        except IndexError:
            break
        owner = programs()
        if owner is None or _STOP_BACKGROUND.is_set() or not future.set_running_or_notify_cancel():
            future.cancel()
            continue
        _compile_one(owner, key, future)
        del owner
    _BACKGROUND_THREADS.discard(threading.current_thread())


def _compile_one(owner: Programs, key: ProgramKey, future: concurrent.futures.Future) -> None:
    """Compile ``key`` on a background worker and execute it once (``first_run_fn``); the executable, or the
    error (raised to a step that waits for it, ``Programs.get``), goes to ``future``."""
    t0 = time.perf_counter()
    try:
        fn = owner._compile_fn(key)
        t1 = time.perf_counter()
        if owner._first_run_fn is not None:
            owner._first_run_fn(key, fn)
        future.set_result(fn)
    except Exception as error:  # noqa: BLE001 - raised to the step that needs it (``Programs.get``)
        logger.warning("the background compile of %s failed (%s: %s); steps use the other programs", key,
                       type(error).__name__, (str(error).splitlines() or [""])[0][:200])
        future.set_exception(error)
        return
    logger.info("compiled %s in the background in %.1fs (first run %.2fs)", key, t1 - t0, time.perf_counter() - t1)


@atexit.register
def _stop_background_compiles() -> None:
    """Cancel the queued background compiles and wait for the ones in progress (XLA must not be compiling while
    the interpreter tears down)."""
    _STOP_BACKGROUND.set()
    for thread in list(_BACKGROUND_THREADS):
        thread.join()


@dataclasses.dataclass(frozen=True)
class ForwardKey:
    """The forward of one bucket; ``return_hidden``: also returns the hidden states (prompt logprobs);
    ``long_prefill``: compiled with the long-prefill attention path (``KernelPolicy.prefill_split``)."""

    bucket: Bucket
    return_hidden: bool = False
    long_prefill: bool = False


@dataclasses.dataclass(frozen=True)
class SampleKey:
    """The sampler for ``num_seqs`` rows of logits in variant ``config`` (with speculative decoding, the L
    sampling rows of a bucket: ``SpecLayout.num_rows``). ``sampled_drafts``: the variant that also verifies drafts
    sampled by a draft model (``spec_rows.DraftProbs``)."""

    num_seqs: int
    config: SamplerConfig
    sampled_drafts: bool = False


ProgramKey = ForwardKey | SampleKey


class Programs:
    """Compiled executables by key. ``compile_fn(key)`` lowers and compiles one program (the runner's);
    ``first_run_fn(key, executable)``, when given, executes a program compiled in the background once, on the
    background thread, before a step may use it."""

    def __init__(self, compile_fn: Callable[[ProgramKey], object],
                 first_run_fn: Callable[[ProgramKey, object], None] | None = None):
        self._compile_fn = compile_fn
        self._first_run_fn = first_run_fn
        self.compiled: dict[ProgramKey, object] = {}
        self._background: dict[ProgramKey, concurrent.futures.Future] = {}  # compiling on a background thread
        self.compile_seconds = 0.0

    def __contains__(self, key: ProgramKey) -> bool:
        return key in self.compiled

    def __len__(self) -> int:
        return len(self.compiled)

    def get(self, key: ProgramKey):
        """The executable of ``key``, compiled now if it was not (a rare variant, or ``enforce_eager``); one still
        compiling in the background is waited for (the wait counts as compile time), and one whose background
        compile failed is compiled again here, alone: on a GPU, a background compile's autotuner shares the
        memory left beside the KV cache with the steps and the other compiles (an error that persists is
        raised)."""
        fn = self.compiled.get(key)
        if fn is None and key in self._background:
            t0 = time.perf_counter()
            try:
                fn = self.compiled[key] = self._background.pop(key).result()
            except Exception:  # noqa: BLE001 - compiled again below
                logger.info("compiling %s again after its background compile failed", key)
            self.compile_seconds += time.perf_counter() - t0
        if fn is None:
            t0 = time.perf_counter()
            fn = self.compiled[key] = self._compile_fn(key)
            self.compile_seconds += time.perf_counter() - t0
            logger.info("compiled %s in %.1fs", key, time.perf_counter() - t0)
        return fn

    def sampler_variant(self, num_seqs: int, config: SamplerConfig) -> SamplerConfig:
        """``config``, or the cheapest compiled variant that covers it (no compile during generate): one ready
        now if any, else one still compiling in the background (the step waits for it)."""
        if SampleKey(num_seqs, config) in self.compiled:
            return config
        compiled = [k.config for k in [*self.compiled, *self._background]
                    if isinstance(k, SampleKey) and k.num_seqs == num_seqs and covers(k.config, config)]
        if not compiled:
            return config
        ready = [c for c in compiled if self.ready(SampleKey(num_seqs, c))]
        return min(ready or compiled, key=cost_order)

    def compile_all(self, keys: list[ProgramKey], on_error: Callable[[ProgramKey, Exception], bool]) -> None:
        """Compile ``keys`` in parallel threads. A failed compile goes to ``on_error(key, error)``: True drops the
        program (the caller changed its plan), False re-raises."""
        t0 = time.perf_counter()
        workers = max(1, min(len(keys), os.cpu_count() or 2))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(self._compile_fn, key): key for key in keys}
            try:
                for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                    key = futures[future]
                    try:
                        self.compiled[key] = future.result()
                    except Exception as error:
                        if not on_error(key, error):
                            raise
                        continue
                    logger.info("compiled %d/%d %s at %.1fs", done, len(keys), key, time.perf_counter() - t0)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # a failed compile need not wait for the rest
                raise
        self.compile_seconds += time.perf_counter() - t0
        logger.info("compiled %d programs in %.1fs", len(keys), time.perf_counter() - t0)

    def compile_in_background(self, keys: list[ProgramKey], before: Callable[[], None] | None = None,
                              workers: int = 1) -> None:
        """Compile the ``keys`` not compiled or compiling yet on ``workers`` background threads, taken in order
        (smallest first: one worker compiles them one at a time), each executed once after its compile
        (``first_run_fn``; ``get`` waits for one a step needs first); ``before``, a method of the runner (held
        weakly), when given runs first on one worker. The threads are daemons: at interpreter exit
        ``_stop_background_compiles`` lets the compiles in progress finish and cancels the queued ones, so a
        script that ends early does not wait for programs it never used."""
        todo = [k for k in keys if k not in self.compiled and k not in self._background]
        if not todo and before is None:
            return
        pairs = [(k, concurrent.futures.Future()) for k in todo]
        self._background.update(pairs)
        queued = collections.deque(pairs)
        # the threads hold the runner weakly: an engine deleted while its programs compile is freed, and the
        # rest of its queue is dropped
        before = None if before is None else weakref.WeakMethod(before)
        for i in range(max(1, min(workers, len(todo)))):
            args = (weakref.ref(self), queued, before if i == 0 else None)
            thread = threading.Thread(target=_compile_queued, args=args, name="jaxllm-compile", daemon=True)
            _BACKGROUND_THREADS.add(thread)
            thread.start()

    def ready(self, key: ProgramKey) -> bool:
        """Whether ``key``'s executable can run without waiting: compiled at start-up or on first use, or
        compiled (and run once) in the background without error."""
        if key in self.compiled:
            return True
        future = self._background.get(key)
        return future is not None and future.done() and not future.cancelled() and future.exception() is None

    def wait_background(self) -> None:
        """Wait until every background compile (and first run) is done (benchmarks: time steady-state steps)."""
        for key in list(self._background):
            self.get(key)

    @property
    def num_scheduled(self) -> int:
        """Programs compiled or compiling in the background."""
        return len(self.compiled) + len(self._background)

    def drop(self, keys: Iterable[ProgramKey]) -> None:
        for key in list(keys):
            self.compiled.pop(key, None)

    def peak_temp_bytes(self) -> int:
        """XLA's largest temporary allocation over the compiled programs (what the step needs besides the cache)."""
        temps = [fn.memory_analysis() for fn in self.compiled.values()]
        return max((getattr(t, "temp_size_in_bytes", 0) or 0 for t in temps), default=0)
