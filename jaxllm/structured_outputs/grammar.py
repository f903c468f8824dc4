"""Grammar compilation, caching and per-sequence matcher state on the host (no jax), on llguidance.

The device half is ``jaxllm.models.sampler.apply_grammar_bitmask``: the host fills one packed int32 bitmask
row per constrained sequence (bit ``v % 32`` of word ``v // 32`` set = token v allowed) and the sampler sets
the logits of disallowed tokens to -inf.

Life of a request's grammar:
  1. ``GrammarCompiler.new_state`` (from ``LLMEngine.add_request``) turns the ``StructuredOutputsParams`` into
     llguidance's grammar text and validates it against the tokenizer synchronously (~0.5 ms for a JSON schema):
     a bad schema, regex or grammar is a ValueError naming it before any device work. The llguidance tokenizer
     it needs is built once, on a background thread from the engine's start-up (``prepare``).
  2. The matcher compile (an ``LLMatcher``: lexer and parser tables) runs on a background thread, once per
     distinct spec: compiled matchers live in an LRU cache keyed by
     ``StructuredOutputsParams.cache_key``; every sequence (each of the n children) gets a deep copy (~10 us).
     The scheduler does not admit a sequence whose grammar is still compiling (``GrammarState.ready``); the
     steps of other requests keep running meanwhile.
  3. ``Scheduler.update`` feeds each sampled token to the sequence's matcher (all of a step's rows in
     parallel, on the grammar thread beside its own loop: ``step.GrammarStep``), so the matcher
     has consumed exactly the sequence's output tokens: preemption by recompute keeps it valid (tokens are
     never removed), and the placeholders of asynchronous scheduling never reach it.
  4. Before a step samples, ``fill_batch`` computes the masks of its constrained rows in parallel (llguidance's
     thread pool, outside the GIL); under asynchronous scheduling on the grammar thread right after step 3,
     while the scheduler's loop still runs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib.util
import logging
import threading
import time
from typing import Any

import numpy as np

from .params import StructuredOutputsConfig, StructuredOutputsParams
from .spec_text import _llguidance, grammar_text
from .step import HOST_SECONDS, MaskFill, executor

__all__ = ["GrammarCompiler", "GrammarState", "grammar_capable", "grammar_text"]

logger = logging.getLogger("jaxllm")

CACHE_SIZE = 256  # distinct compiled grammars kept (vLLM's xgrammar cache is of the same order)


def grammar_capable(tokenizer: Any) -> bool:
    """Whether structured outputs can run with ``tokenizer``: a fast (Rust) HF tokenizer, llguidance installed.
    Such an engine prepares for constrained requests at start-up (the llguidance tokenizer on a background
    thread, the runner's bitmask sampler programs with the others)."""
    return hasattr(tokenizer, "backend_tokenizer") and llguidance_installed()


def llguidance_installed() -> bool:
    return importlib.util.find_spec("llguidance") is not None


class GrammarCompiler:
    """Compiles and caches grammars for one engine (one tokenizer and vocabulary).

    ``vocab_size`` is the model's (bitmask width ``ceil(vocab_size / 32)`` words; tokens beyond the tokenizer's
    vocabulary are never allowed); ``eos_token_ids`` are the ids a finished grammar allows."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: tuple[int, ...],
                 config: StructuredOutputsConfig | None = None, cache_size: int = CACHE_SIZE) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self.config = config or StructuredOutputsConfig()
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[tuple, concurrent.futures.Future] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._ll_tokenizer: concurrent.futures.Future | None = None  # llguidance's tokenizer, built once
        # what structured outputs cost on the host (reported by ``jaxllm bench --structured``)
        self.validate_seconds = 0.0  # synchronous, in add_request
        self.tokenizer_seconds = 0.0  # the llguidance tokenizer, once
        self.compile_seconds = 0.0  # background: the matchers
        self.num_compiled = 0

    @property
    def num_words(self) -> int:
        return -(-self.vocab_size // 32)

    def new_state(self, request_id: str, params: StructuredOutputsParams) -> GrammarState:
        """Validate ``params`` now (ValueError naming the request) and start compiling it in the background."""
        if self.tokenizer is None:
            raise ValueError(f"request {request_id!r}: structured outputs need a tokenizer, but the engine has "
                             "none (skip_tokenizer_init)")
        if not hasattr(self.tokenizer, "backend_tokenizer"):
            raise ValueError(f"request {request_id!r}: structured outputs need a fast (Rust) HF tokenizer, got "
                             f"{type(self.tokenizer).__name__}")
        key = params.cache_key(self.config)
        with self._lock:
            future = self._cache.get(key)
            if future is not None:
                self._cache.move_to_end(key)
                return GrammarState(future)
        lltok = self._llg_tokenizer(request_id)
        t0 = time.perf_counter()
        try:
            text = grammar_text(params, self.config)
            error = _llguidance().LLMatcher.validate_grammar(text, lltok)
        except (ValueError, TypeError) as e:
            error = str(e)
        self.validate_seconds += time.perf_counter() - t0
        if error:
            spec = getattr(params, params.kind)
            raise ValueError(f"request {request_id!r}: invalid structured_outputs {params.kind} {spec!r}: "
                             f"{error.strip()}")
        with self._lock:
            future = self._cache[key] = self._background().submit(self._compile, lltok, text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return GrammarState(future)

    def _background(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one background thread of the matcher compiles (call under the lock)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-grammar")
        return self._pool

    def prepare(self) -> None:
        """Start building llguidance's view of the tokenizer (0.3-1.5 s) on a thread of its own, so that the first
        constrained request does not wait for it (the engine calls this at start-up). A daemon thread: a process
        that never uses structured outputs does not wait for it at exit."""
        with self._lock:
            if self._ll_tokenizer is not None:
                return
            future = self._ll_tokenizer = concurrent.futures.Future()

        def build() -> None:
            try:
                future.set_result(self._build_llg_tokenizer())
            except Exception as e:  # noqa: BLE001 - handed to the first constrained request (``_llg_tokenizer``)
                future.set_exception(e)

        threading.Thread(target=build, name="jaxllm-grammar-tokenizer", daemon=True).start()

    def _llg_tokenizer(self, request_id: str):
        """llguidance's tokenizer, waiting for its build (started now if ``prepare`` was not called): a
        tokenizer it cannot read is a ValueError of the first structured request."""
        self.prepare()
        try:
            return self._ll_tokenizer.result()
        except ValueError as e:
            raise ValueError(f"request {request_id!r}: structured outputs cannot use this tokenizer: {e}") from e

    def _build_llg_tokenizer(self):
        """EOS ids outside the tokenizer's vocabulary are left out; with none left, the tokenizer's own EOS
        ends a grammar."""
        t0 = time.perf_counter()
        eos = [t for t in self.eos_token_ids if t < len(self.tokenizer)] or self.tokenizer.eos_token_id
        lltok = _llguidance().LLTokenizer(self.tokenizer.backend_tokenizer.to_str(), n_vocab=self.vocab_size,
                                          eos_token=eos)
        self.tokenizer_seconds = time.perf_counter() - t0
        return lltok

    def _compile(self, lltok, text: str):
        """Background thread: the tokenizer-specific matcher of an already validated grammar."""
        t0 = time.perf_counter()
        matcher = _llguidance().LLMatcher(lltok, text, log_level=0)
        self.compile_seconds += time.perf_counter() - t0
        self.num_compiled += 1
        if matcher.is_error():
            raise ValueError(f"grammar failed to compile: {matcher.get_error()}")
        return matcher

    def fill_bitmasks(self, states: list[GrammarState], out: np.ndarray) -> None:
        """Row i of ``out`` [len(states), num_words] int32 <- the allowed-token bits of ``states[i]``."""
        assert out.dtype == np.int32 and out.flags["C_CONTIGUOUS"] and out.shape[1] == self.num_words
        t0 = time.perf_counter()
        executor().unsafe_compute_mask_ptr([(s.matcher, i) for i, s in enumerate(states)], out.ctypes.data,
                                           self.num_words * 4, out.shape[0])
        HOST_SECONDS["mask"] += time.perf_counter() - t0

    def mask_fill(self, batch: Any) -> MaskFill | None:
        """The bitmask rows of a ``ScheduledBatch``: its constrained sampling rows whose grammar is ready and
        has not failed (None without any); ``MaskFill.fill`` computes them, ``assign`` sets each row's
        ``grammar_bitmask``."""
        rows = [s for s in batch.seqs if s.sample and s.grammar is not None and s.grammar.ready()
                and not s.grammar.failed]
        return MaskFill(rows, self.num_words) if rows else None

    def fill_batch(self, batch: Any) -> None:
        """Set ``grammar_bitmask`` on every constrained sampling row of a ``ScheduledBatch`` from its grammar's
        current state, now (rows whose grammar rejected a token stay unmasked: they are ending)."""
        masks = self.mask_fill(batch)
        if masks is not None:
            masks.fill()
            masks.assign()


class GrammarState:
    """One sequence's matcher: created from the compiled grammar when first used (a deep copy of the cached
    one), fed every token the sequence samples (``step.GrammarStep``). A finished grammar consumes nothing
    more: its mask allows only EOS, which ``ignore_eos`` keeps sampling."""

    __slots__ = ("_future", "_matcher", "failed")

    def __init__(self, future: concurrent.futures.Future) -> None:
        self._future = future
        self._matcher = None
        self.failed = False  # a sampled token the grammar rejected (see ``accept``)

    def ready(self) -> bool:
        """Compiled (a matcher, once made, answers without the future's lock: this is asked per row per step)."""
        return self._matcher is not None or self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        concurrent.futures.wait([self._future], timeout)

    @property
    def matcher(self):
        if self._matcher is None:
            self._matcher = self._future.result().deep_copy()
        return self._matcher

    def reject(self, token: int) -> None:
        """The grammar rejected a sampled token (its matcher is now in an error state, for good)."""
        self.failed = True
        logger.error("structured outputs: token %d rejected by the grammar (%s)", token,
                     self.matcher.get_error()[:200])
