"""CallGuard: calls from several threads run one at a time; a re-entrant call is a RuntimeError that leaves
the outer call intact."""

from __future__ import annotations

import threading
import time

import pytest

from jaxllm.call_guard import CallGuard, serialized


class Counter:
    def __init__(self):
        self._call_guard = CallGuard()
        self.active = 0
        self.max_active = 0
        self.inner_error = None

    @serialized
    def work(self, callback=None):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        time.sleep(0.01)
        if callback:
            callback()
        self.active -= 1
        return "done"


def test_threads_are_serialized():
    c = Counter()
    results = []
    threads = [threading.Thread(target=lambda: results.append(c.work())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["done"] * 8 and c.max_active == 1


def test_reentrant_call_is_a_clear_error_and_the_outer_call_finishes():
    c = Counter()

    def callback():
        with pytest.raises(RuntimeError, match=r"LLM.work\(\) was called while LLM.work\(\) is running"):
            c.work()
        c.inner_error = True

    assert c.work(callback) == "done" and c.inner_error
    assert c.work() == "done"  # the guard is free again


def test_guard_released_after_an_exception():
    c = Counter()

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        c.work(boom)
    c.active = 0
    assert c.work() == "done"
