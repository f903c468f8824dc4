"""One ``LLM`` serves one call at a time: calls from several threads are serialized, and a call made from
inside another (a ``use_tqdm`` callback, a tokenizer hook) is a clear error instead of corrupting the engine.

The engine is a single-controller loop that owns the KV cache, the scheduler and the in-flight step; two loops
over it at once would donate the same cache buffers and interleave the scheduler's bookkeeping. A lock makes a
second thread wait for the first call to finish, so each call returns exactly what it would alone. A re-entrant
call on the same thread cannot wait (it would deadlock on its own outer call), so it raises ``RuntimeError``
before touching the engine, and the outer call carries on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class CallGuard:
    """A lock that knows which thread holds it and for which method."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._method: str | None = None

    def run(self, method: str, fn: Callable[[], Any]) -> Any:
        if self._owner == threading.get_ident():
            raise RuntimeError(f"LLM.{method}() was called while LLM.{self._method}() is running on the same thread "
                               "(e.g. from a use_tqdm callback); an LLM runs one call at a time: make the call "
                               "after the outer one returns")
        with self._lock:
            self._owner, self._method = threading.get_ident(), method
            try:
                return fn()
            finally:
                self._owner = self._method = None


def serialized(method: F) -> F:
    """Decorator for the public methods of a class with a ``_call_guard`` attribute (a ``CallGuard``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self._call_guard.run(method.__name__, lambda: method(self, *args, **kwargs))

    return wrapper  # type: ignore[return-value]
