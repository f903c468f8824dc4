"""How ``Scheduler.update`` applies a step's sampled tokens to a sequence: one token at a time (speculative
steps emit several) with the stop checks, logprobs, prompt logprobs, grammar advances and pooled outputs.
Mixed into ``Scheduler``."""

from __future__ import annotations

import logging
from typing import Any

from ..structured_outputs.step import GrammarStep
from .batch import RunnerOutput, ScheduledBatch, ScheduledSeq
from .detokenizer import make_logprobs
from .sequence import Sequence, SequenceStatus

logger = logging.getLogger("jaxllm")


class TokenUpdates:
    """Needs the scheduler's queues, block manager and counters (see ``Scheduler.update``)."""

    def _append_step(self, batch: ScheduledBatch, seqs: list[Sequence], output: RunnerOutput, now: float,
                     finished: list[Sequence]) -> None:
        """``update``'s per-sequence loop: tokens, logprobs and stop checks."""
        for sseq, seq in zip(batch.seqs, seqs):
            if seq.status == SequenceStatus.FINISHED:
                continue  # aborted, or it stopped in the previous step: this step's token is dropped
            decode = self.decode_token if seq.params.detokenize else None
            if sseq.want_prompt_logprobs:
                self._add_prompt_logprobs(seq, sseq.start, output.prompt_logprobs.get(seq.seq_id), decode)
            if not sseq.sample:
                continue
            if seq.pooling_params is not None:
                self._finish_pooled(seq, output, finished)
                continue
            tokens, logprobs = self._step_tokens(sseq, output)
            for j, token in enumerate(tokens):
                if self._append_token(seq, token, logprobs[j] if logprobs else None, decode, now):
                    finished.append(seq)
                    break
            if seq.seq_id in output.nonfinite and seq.status != SequenceStatus.FINISHED:
                self._finish_error(seq, finished)
                continue
            if sseq.draft_token_ids and seq.status == SequenceStatus.RUNNING:
                seq.num_computed_tokens = len(seq.token_ids) - 1  # rejected drafts' slots are recomputed

    def _step_tokens(self, sseq: ScheduledSeq, output: RunnerOutput) -> tuple[list[int], list | None]:
        """The tokens a sequence emits this step (1, or 1..k + 1 when it speculates) and their logprobs."""
        sid = sseq.seq_id
        if sseq.draft_token_ids:
            tokens = output.accepted.get(sid)
            if not tokens and not (tokens is not None and sid in output.nonfinite):
                raise RuntimeError(f"runner returned no accepted tokens for speculative seq {sid}")
            self.speculation.count(sseq, len(tokens) + (sid in output.nonfinite))  # drafts accepted: len(tokens)
            lps = output.accepted_logprobs.get(sid)
        elif sid in output.nonfinite:
            return [], []
        else:
            try:
                tokens = [int(output.sampled[sid])]
            except KeyError:
                raise RuntimeError(f"runner returned no sampled token for seq {sid}") from None
            lps = [output.logprobs[sid]] if sid in output.logprobs else None
        if sseq.sampling_params.logprobs is not None and (lps is None or len(lps) < len(tokens)):
            raise RuntimeError(f"runner returned no logprobs for seq {sid} (logprobs requested)")
        return tokens, lps

    def _append_token(self, seq: Sequence, token: int, tl: Any, decode: Any, now: float) -> bool:
        """Append one sampled token (or fill in the placeholder of asynchronous scheduling), record its
        logprobs, apply the stop checks. Returns whether the sequence finished. (Its grammar gets the token
        from ``_start_grammars``.)"""
        token = int(token)
        if seq.token_ids[-1] < 0:
            seq.token_ids[-1] = token
        else:
            seq.token_ids.append(token)
        self.num_generated_tokens += 1
        if seq.logprobs is not None:
            seq.logprobs.append(make_logprobs(tl, decode))
            seq.cumulative_logprob += float(tl.logprob)
        if seq.first_token_time is None:
            seq.first_token_time = now
        seq.last_token_time = now
        was_waiting = seq.status == SequenceStatus.WAITING  # preempted while this step ran
        if self._check_stop(seq, token):
            if was_waiting:
                self.waiting.remove(seq)
            return True
        return False

    def _finish_error(self, seq: Sequence, finished: list[Sequence]) -> None:
        """The sampler found no valid token for ``seq`` (non-finite logits, or every token masked): it ends with
        finish_reason "error" (vLLM's FinishReason.ERROR) and the tokens it has; the other sequences of the step
        are unaffected. A placeholder of asynchronous scheduling for the missing token is dropped."""
        while seq.token_ids[-1] < 0:
            seq.token_ids.pop()
        logger.warning("request %r (sample %d): the logits held NaN / inf or left no token to sample after "
                       "%d generated tokens; it finishes with finish_reason 'error'", seq.request_id, seq.index,
                       seq.num_output_tokens)
        if seq.status == SequenceStatus.WAITING:  # preempted while this step ran
            self.waiting.remove(seq)
        seq.finish("error")
        finished.append(seq)

    def _finish_pooled(self, seq: Sequence, output: RunnerOutput, finished: list[Sequence]) -> None:
        """A pooling request's whole prompt ran: it finishes with the runner's pooled data (nothing sampled)."""
        try:
            seq.pooled = output.pooled[seq.seq_id]
        except KeyError:
            raise RuntimeError(f"runner returned no pooled data for seq {seq.seq_id}") from None
        if seq.status == SequenceStatus.WAITING:  # preempted while this step ran
            self.waiting.remove(seq)
        seq.finish("stop")
        finished.append(seq)

    def _start_grammars(self, batch: ScheduledBatch, seqs: list[Sequence], output: RunnerOutput,
                        next_masks: Any) -> tuple[list[Sequence], GrammarStep | None]:
        """Start feeding the step's tokens to their sequences' grammars, then filling ``next_masks`` (a
        ``MaskFill`` or None): a ``GrammarStep``, beside ``update``'s loop. The sequences are those the loop
        appends a token to: unfinished, sampled, not pooled, with a finite row (constrained sequences never
        speculate, so it is one token each)."""
        constrained, tokens = [], []
        for sseq, seq in zip(batch.seqs, seqs):
            if (seq.grammar is None or not sseq.sample or seq.status == SequenceStatus.FINISHED
                    or seq.pooling_params is not None or seq.seq_id in output.nonfinite):
                continue
            if sseq.draft_token_ids:
                raise RuntimeError(f"seq {seq.seq_id} speculates under structured outputs")
            token = output.sampled.get(seq.seq_id)
            if token is None:  # the loop raises the runner's error; no grammar moves
                constrained, tokens = [], []
                break
            constrained.append(seq)
            tokens.append(int(token))
        if not constrained and next_masks is None:
            return [], None
        return constrained, GrammarStep([seq.grammar for seq in constrained], tokens, next_masks)

    def _finish_grammars(self, constrained: list[Sequence], job: GrammarStep, finished: list[Sequence]) -> None:
        """Wait for the grammars. A rejected token (a mask that was not applied, logged) ends its sequence with
        finish_reason "abort"."""
        for seq, good in zip(constrained, job.result()):
            if not good and seq.status != SequenceStatus.FINISHED:
                if seq.status == SequenceStatus.WAITING:
                    self.waiting.remove(seq)
                seq.finish("abort")
                finished.append(seq)

    def _add_prompt_logprobs(self, seq: Sequence, start: int, entries: list | None, decode: Any) -> None:
        """Entry j is for prompt token ``start + 1 + j``; positions already recorded (before a preemption)
        are skipped, so recomputation does not duplicate them."""
        if not entries:
            return
        pls = seq.prompt_logprobs
        for j, tl in enumerate(entries):
            pos = start + 1 + j
            if pos >= seq.num_prompt_tokens:
                break
            if pos == len(pls):
                pls.append(make_logprobs(tl, decode))

    def _check_stop(self, seq: Sequence, token: int) -> bool:
        """vLLM's order: EOS / stop ids (not before min_tokens), then length (max_tokens, max_model_len);
        then stop strings, which override "length". Returns whether the sequence finished."""
        num_out = len(seq.token_ids) - seq.num_prompt_tokens
        reason: str | None = None
        stop_reason: int | str | None = None
        if num_out >= seq.params.min_tokens:
            if token in seq.eos_token_ids:
                reason = "stop"
            elif token in seq.stop_token_ids:
                reason, stop_reason = "stop", token
        if reason is None and (num_out >= seq.max_tokens or len(seq.token_ids) >= self.max_model_len):
            reason = "length"
        if seq.detokenizer is not None:
            stop_str = seq.detokenizer.update(token, num_out, reason == "stop")
            if stop_str is not None:
                reason, stop_reason = "stop", stop_str
        if reason is None:
            return False
        seq.finish(reason, stop_reason)
        return True

    # ---- abort -----------------------------------------------------------------------------------------
