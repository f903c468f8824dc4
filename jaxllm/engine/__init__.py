"""The host side of the offline engine: sequences, KV block manager, scheduler, detokenizer, LLMEngine.

Plain Python (numpy at most): this package never imports jax, so it is testable with a fake runner.
"""

from .batch import RunnerOutput, ScheduledBatch, ScheduledSeq, TokenLogprobs
from .engine import LLMEngine
from .stats import EngineStats

__all__ = ["EngineStats", "LLMEngine", "RunnerOutput", "ScheduledBatch", "ScheduledSeq", "TokenLogprobs"]
