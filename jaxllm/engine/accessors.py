"""vLLM's ``LLMEngine`` accessors (tokenizer, metrics, prefix cache, LoRA checks). Mixed into ``LLMEngine``,
which owns the attributes they read."""

from __future__ import annotations

from typing import Any

from . import metrics as _metrics
from .detokenizer import TokenizerView


class EngineAccessors:
    """Needs the engine's ``tokenizer``, ``_view``, ``scheduler``, ``block_manager``, ``runner``,
    ``max_loras``, ``_requests``, ``_steps`` and ``_metric_labels``."""

    def check_lora_request(self, lora_request: Any) -> None:
        """ValueError/TypeError before any device work when LoRA is off or the adapter is bad (the runner loads
        it into host memory)."""
        if self.max_loras is None:
            raise ValueError("a lora_request was given but LoRA is not enabled; pass enable_lora=True")
        self.runner.check_lora(lora_request)

    def get_tokenizer(self):
        """The tokenizer (None with ``skip_tokenizer_init``)."""
        return self.tokenizer

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Use ``tokenizer`` for text prompts, detokenization and stop strings from now on (between requests)."""
        if self._requests:
            raise ValueError(f"set_tokenizer with {len(self._requests)} unfinished requests: finish or abort them")
        self.tokenizer = tokenizer
        self._view = TokenizerView(tokenizer) if tokenizer is not None else None
        self.scheduler.decode_token = self._view.decode_token if self._view else None
        self._prepare_grammars()  # grammars compiled for the old tokenizer's vocabulary are dropped

    def get_metrics(self) -> list[_metrics.Metric]:
        """vLLM's metric snapshot: see ``jaxllm.engine.metrics``."""
        return _metrics.snapshot(self, self._metric_labels)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix block; False (nothing done) while some request holds blocks (vLLM)."""
        if self._requests or self._steps:
            return False
        return self.block_manager.reset_prefix_cache()
