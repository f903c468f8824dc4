"""A step's grammar work on the host, off the scheduler's critical path (no jax).

Between two samplers the host feeds every constrained row's sampled token to its grammar and fills the next
step's bitmasks (``MaskFill``). Both run in llguidance's thread pool outside the GIL, so ``Scheduler.update``
starts them on a thread of their own (``GrammarStep``) before its per-sequence loop (appending tokens, stop
checks, detokenization) and collects them after it: the grammar work overlaps that Python loop instead of
following it. Everything that needs Python (which matchers, which rows, the buffer) is prepared before, on the
caller's thread, so the grammar thread only makes the two llguidance calls and holds the GIL for moments
between them (``SWITCH_INTERVAL_S``). The loop never touches a matcher, and which tokens the grammars get is known before it
(``TokenUpdates._start_grammars``), so the result is the same as running them one after the other.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
import threading
import time

import numpy as np

PARALLEL_MIN = 8  # rows below which a thread hand-off costs more than the grammar work it moves
# The grammar thread pays off when it and llguidance's pool have cores beside the engine's thread (a GPU host);
# on a machine of 2-3 cores they would take the loop's core, so the work runs inline, after the loop.
THREAD_MIN_CPUS = 4
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
USE_THREAD = _CPUS >= THREAD_MIN_CPUS
# The interpreter's switch interval while a step's grammar work runs beside the scheduler's loop. The grammar
# thread needs the GIL three times (to start, between its two llguidance calls, to finish); a thread waiting
# for the GIL gets it only after the switch interval (5 ms by default), longer than the whole loop, which would
# put the grammar work after the loop instead of beside it. 0.1 ms lets it through at once; the interval is
# restored when the work is collected (``GrammarStep.result``).
SWITCH_INTERVAL_S = 1e-4

# Host seconds of structured outputs per phase, process-wide ("accept": tokens fed to grammars, "mask": bitmasks
# filled, "wait": Scheduler.update waiting for the grammar thread after its loop; the engine adds the phases of
# its constrained steps, ``ConstrainedSteps._launch_constrained``); the bench reports their deltas.
HOST_SECONDS: collections.Counter = collections.Counter()

_EXECUTOR = None  # llguidance's thread pool (one per process), for masks and token consumption in parallel
_THREAD = None  # the one thread that drives a step's grammar work beside the scheduler's loop
_LOCK = threading.Lock()


def executor():
    """llguidance's ``LLExecutor`` (its default size: 80% of the cores, at most 32 threads)."""
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            import llguidance

            _EXECUTOR = llguidance.LLExecutor()
    return _EXECUTOR


def _thread() -> concurrent.futures.ThreadPoolExecutor:
    global _THREAD
    with _LOCK:
        if _THREAD is None:
            _THREAD = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-grammar-step")
    return _THREAD


class MaskFill:
    """The bitmask rows of one step: ``rows`` (ScheduledSeqs whose grammar is ready and has not failed) get
    row i of ``out`` [len(rows), num_words] int32. Planned on the engine's thread; ``fill`` is one llguidance
    call (no Python in it, so it runs beside the scheduler's loop without waiting for the GIL); ``assign``
    hands each row its mask (a row whose grammar rejected a token meanwhile stays unmasked: it is ending)."""

    def __init__(self, rows: list, num_words: int) -> None:
        self.rows = rows
        self.out = np.empty((len(rows), num_words), np.int32)
        self._pairs = [(s.grammar.matcher, i) for i, s in enumerate(rows)]

    def fill(self) -> None:
        t0 = time.perf_counter()
        executor().unsafe_compute_mask_ptr(self._pairs, self.out.ctypes.data, self.out.shape[1] * 4,
                                           self.out.shape[0])
        HOST_SECONDS["mask"] += time.perf_counter() - t0

    def assign(self) -> None:
        for sseq, mask in zip(self.rows, self.out):
            sseq.grammar_bitmask = None if sseq.grammar.failed else mask


class GrammarStep:
    """One step's grammar work: ``states[i]`` consumes ``tokens[i]`` (a finished grammar takes nothing more),
    then ``masks`` (the next step's rows, from the advanced grammars) are filled. Started at construction: on
    the grammar thread when there are at least ``PARALLEL_MIN`` rows (and ``USE_THREAD``), so that it overlaps what the caller does until ``result()``, which returns False where a grammar rejected its
    token (logged) and assigns the masks. Small steps run inline in ``result()``, in the same order."""

    def __init__(self, states: list, tokens: list[int], masks: MaskFill | None = None) -> None:
        self._states, self._masks = states, masks
        self._todo = [i for i, s in enumerate(states) if not (s.matcher.is_stopped() and not s.matcher.is_error())]
        self._pairs = [(states[i].matcher, int(tokens[i])) for i in self._todo]
        self._tokens = tokens
        self._consumed: list[int] = []  # states that took their token (``undo``)
        self._future = None
        self._interval = None  # the switch interval to restore
        if USE_THREAD and len(self._pairs) + (len(masks.rows) if masks else 0) >= PARALLEL_MIN:
            self._interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._interval, SWITCH_INTERVAL_S))
            self._future = _thread().submit(self._run)

    def _run(self) -> list[bool]:
        """The llguidance calls alone (they release the GIL; this thread needs it only between them)."""
        t0 = time.perf_counter()
        results = executor().consume_token_par(self._pairs) if self._pairs else []
        HOST_SECONDS["accept"] += time.perf_counter() - t0
        if self._masks is not None:
            self._masks.fill()
        return results

    def result(self) -> list[bool]:
        if self._future is None:
            results = self._run()
        else:
            t0 = time.perf_counter()
            try:
                results = self._future.result()
            finally:
                if self._interval is not None:
                    sys.setswitchinterval(self._interval)
                    self._interval = None
            HOST_SECONDS["wait"] += time.perf_counter() - t0
        ok = [True] * len(self._states)
        for i, good in zip(self._todo, results):
            if good:
                self._consumed.append(i)
            else:
                self._states[i].reject(self._tokens[i])
                ok[i] = False
        if self._masks is not None:
            self._masks.assign()
        return ok

    def undo(self) -> None:
        """The step's tokens were not appended after all (``Scheduler.update`` failed midway): wait for the
        work and take the tokens back out of the grammars that consumed them, so a retried step feeds them
        again. (A grammar that rejected its token stays failed, as it would have.)"""
        try:
            self.result()
        finally:
            for i in self._consumed:
                self._states[i].matcher.rollback(1)
            self._consumed = []
