"""A sequence's share of a step as the runner sees it (``ScheduledSeq``): which tokens to compute, whether to
sample, and the request's sampling inputs. Built by the scheduler for every row of a batch (host side, no jax)."""

from __future__ import annotations

from .batch import ScheduledSeq
from .sequence import Sequence
from .speculation import Speculation


def scheduled_seq(seq: Sequence, start: int, n: int, drafts: tuple[int, ...] = ()) -> ScheduledSeq:
    """``seq``'s share of a step: ``n`` tokens from position ``start``, the last ``len(drafts)`` of them
    speculative drafts."""
    sseq = plain_scheduled_seq(seq, start, n - len(drafts))
    if drafts:
        Speculation.attach(seq, sseq, drafts)
    return sseq


def plain_scheduled_seq(seq: Sequence, start: int, n: int) -> ScheduledSeq:
    """``seq``'s ``n`` tokens from ``start``; it samples when they reach the end of its tokens. Token ids and the
    block table are the sequence's live lists (no copy per step)."""
    num_out = len(seq.token_ids) - seq.num_prompt_tokens
    return ScheduledSeq(
        seq_id=seq.seq_id,
        token_ids=seq.token_ids,  # live list, read-only for the runner until update()
        start=start,
        num_new_tokens=n,
        block_table=seq.block_table,  # live list, same
        num_prompt_tokens=seq.num_prompt_tokens,
        sampling_params=seq.params,
        sample=start + n == len(seq.token_ids),
        output_index=num_out,
        rng_seed=seq.rng_seed,
        banned_token_ids=seq.banned_token_ids if num_out < seq.params.min_tokens else (),
        # (after a preemption the prompt is recomputed, but its logprobs are already recorded)
        want_prompt_logprobs=seq.want_prompt_logprobs
        and start < seq.num_prompt_tokens - 1
        and len(seq.prompt_logprobs) < seq.num_prompt_tokens,
        pooling_params=seq.pooling_params,
        grammar=seq.grammar,
        lora_request=seq.lora_request,
        prompt_embeds=seq.prompt_embeds,
    )
