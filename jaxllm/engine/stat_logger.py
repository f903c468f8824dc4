"""Periodic engine statistics in the log (vLLM's ``LoggingStatLogger``), on when ``LLM(disable_log_stats=False)``.

Every ``interval`` seconds of stepping, one INFO line on the "jaxllm" logger: the prompt and generation
throughput since the previous line, the running / waiting sequences, the KV-cache usage and the preemptions.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("jaxllm")

LOG_INTERVAL_S = 5.0  # vLLM's default


class StatLogger:
    def __init__(self, interval: float = LOG_INTERVAL_S, clock=time.monotonic):
        self.interval, self._clock = interval, clock
        self._last = clock()
        self._prompt = self._generated = 0

    def maybe_log(self, stats, scheduler, block_manager) -> bool:
        """Log one line when ``interval`` has passed since the last; True when it did. ``stats``: EngineStats."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed < self.interval:
            return False
        prompt = (stats.num_prompt_tokens - self._prompt) / elapsed
        generated = (stats.num_generated_tokens - self._generated) / elapsed
        logger.info("Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, Running: %d "
                    "reqs, Waiting: %d reqs, KV cache usage: %.1f%%, Preemptions: %d", prompt, generated,
                    len(scheduler.running), len(scheduler.waiting), 100 * block_manager.usage, stats.num_preemptions)
        self._last, self._prompt, self._generated = now, stats.num_prompt_tokens, stats.num_generated_tokens
        return True
