"""The engine's counters (what ``get_metrics`` and the stat logger report)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class EngineStats:
    num_steps: int = 0
    num_scheduled_tokens: int = 0  # prefill + decode tokens computed (recomputation included)
    num_generated_tokens: int = 0  # tokens sampled
    num_preemptions: int = 0
    num_prompt_tokens: int = 0  # of added requests (each child counted once per request)
    num_cached_tokens: int = 0  # prefix-cache hit tokens reported by finished sequences
    num_swap_preemptions: int = 0  # preemptions by swap (included in num_preemptions)
    num_swapped_out_blocks: int = 0  # KV blocks copied device -> host (preemption and prefix offload)
    num_swapped_in_blocks: int = 0  # KV blocks copied host -> device
    num_host_prefix_cache_hits: int = 0  # blocks found in the host prefix cache
    # speculative decoding (vLLM's vllm:spec_decode_* counters): sequence-steps with drafts, draft tokens
    # proposed, draft tokens accepted, accepted drafts by position
    spec_decode_num_drafts: int = 0
    spec_decode_num_draft_tokens: int = 0
    spec_decode_num_accepted_tokens: int = 0
    spec_decode_num_accepted_tokens_per_pos: list = dataclasses.field(default_factory=list)

    @property
    def spec_decode_acceptance_rate(self) -> float | None:
        """Accepted / proposed draft tokens (None before any draft)."""
        if not self.spec_decode_num_draft_tokens:
            return None
        return self.spec_decode_num_accepted_tokens / self.spec_decode_num_draft_tokens

    def copy_counters(self, scheduler, host) -> None:
        """Take the counters the scheduler, its speculation and the host tier (None: none) keep themselves."""
        self.num_generated_tokens = scheduler.num_generated_tokens
        self.num_preemptions = scheduler.num_preemptions
        if host is not None:
            self.num_swap_preemptions = scheduler.num_swap_preemptions
            self.num_swapped_out_blocks = host.num_swapped_out
            self.num_swapped_in_blocks = host.num_swapped_in
            self.num_host_prefix_cache_hits = host.prefix_hits
        spec = scheduler.speculation
        if spec is not None:
            self.spec_decode_num_drafts, self.spec_decode_num_draft_tokens = spec.num_drafts, spec.num_draft_tokens
            self.spec_decode_num_accepted_tokens = spec.num_accepted_tokens
            self.spec_decode_num_accepted_tokens_per_pos = list(spec.num_accepted_tokens_per_pos)
