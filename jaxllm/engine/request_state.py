"""A request's state in the engine and the RequestOutputs built from it (host side, no jax).

``SamplingParams.output_kind`` decides what ``LLMEngine.step`` returns for a request: FINAL_ONLY one output when
it finishes; CUMULATIVE an output after every step that added tokens, each holding everything so far; DELTA the
same, each holding only what is new since the previous output (token ids, text, logprobs; ``cumulative_logprob``
stays cumulative, as in vLLM). ``SamplingParams.flat_logprobs`` turns the logprob lists into FlatLogprobs.
"""

from __future__ import annotations

import dataclasses
import time

from ..outputs import CompletionOutput, FlatLogprobs, RequestMetrics, RequestOutput
from ..sampling_params import RequestOutputKind, SamplingParams
from .sequence import Sequence


@dataclasses.dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    metrics: RequestMetrics
    num_unfinished: int
    # per sample: (tokens, text characters, logprob entries) already returned (DELTA), and the token count of
    # the last output (CUMULATIVE / DELTA: an output only when it changed)
    sent: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    last_num_tokens: int = 0

    @property
    def streams(self) -> bool:
        return self.params.output_kind != RequestOutputKind.FINAL_ONLY

    def has_news(self) -> bool:
        """Whether an unfinished request has an output to stream: some sample got tokens since its last output
        (at least ``SamplingParams.stream_interval`` of them, but the first output comes at once)."""
        new = sum(_num_outputs(s) for s in self.seqs) - self.last_num_tokens
        if self.last_num_tokens == 0:
            return new > 0
        return new >= (self.params.stream_interval or 1)

    def make_output(self, finished: bool) -> RequestOutput:
        """The RequestOutput of now (``finished``: the final one, which also stamps the finish time)."""
        m = self.metrics
        seqs = self.seqs
        times = [s.first_scheduled_time for s in seqs if s.first_scheduled_time is not None]
        m.first_scheduled_time = min(times) if times else None
        times = [s.first_token_time for s in seqs if s.first_token_time is not None]
        m.first_token_time = min(times) if times else None
        times = [s.last_token_time for s in seqs if s.last_token_time is not None]
        m.last_token_time = max(times) if times else None
        if finished:
            m.finished_time = time.time()
        if not self.sent:
            self.sent = [(0, 0, 0)] * len(seqs)
        outputs = [self._completion(i, s) for i, s in enumerate(seqs)]
        self.last_num_tokens = sum(_num_outputs(s) for s in seqs)
        prompt_lps = seqs[0].prompt_logprobs
        if prompt_lps is not None and self.params.flat_logprobs:
            prompt_lps = FlatLogprobs.from_positions(prompt_lps)
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            prompt_logprobs=prompt_lps,
            outputs=outputs,
            finished=finished,
            metrics=m,
            num_cached_tokens=seqs[0].num_cached_tokens,
            lora_request=seqs[0].lora_request,
        )

    def _completion(self, i: int, seq: Sequence) -> CompletionOutput:
        n = _num_outputs(seq)
        token_ids = seq.token_ids[seq.num_prompt_tokens: seq.num_prompt_tokens + n]
        text, logprobs = _visible_text(seq), seq.logprobs
        if self.params.output_kind == RequestOutputKind.DELTA:
            sent_tokens, sent_chars, sent_lps = self.sent[i]
            token_ids, text = token_ids[sent_tokens:], text[sent_chars:]
            logprobs = None if logprobs is None else logprobs[sent_lps:]
            self.sent[i] = (n, sent_chars + len(text), len(seq.logprobs or ()))
        elif self.params.output_kind == RequestOutputKind.CUMULATIVE and logprobs is not None:
            logprobs = list(logprobs)  # a snapshot: the sequence keeps appending
        if logprobs is not None and self.params.flat_logprobs:
            logprobs = FlatLogprobs.from_positions(logprobs)
        return CompletionOutput(
            index=seq.index,
            text=text,
            token_ids=token_ids,
            cumulative_logprob=seq.cumulative_logprob,
            logprobs=logprobs,
            finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason,
            lora_request=seq.lora_request,
        )


def _visible_text(seq: Sequence) -> str:
    """The text an output shows now: while a sequence with stop strings (left out of the text) runs, its last
    ``max(len(stop)) - 1`` characters are held back, since they may begin a stop string that the next token
    completes and that the text must not show (vLLM's ``stop_buffer_length``)."""
    text, params = seq.text, seq.params
    if seq.finish_reason is None and params.stop and not params.include_stop_str_in_output:
        hold = max(len(s) for s in params.stop) - 1
        return text[:max(0, len(text) - hold)]
    return text


def _num_outputs(seq: Sequence) -> int:
    """Generated tokens known on the host (a trailing placeholder of asynchronous scheduling is not one)."""
    n = len(seq.token_ids)
    while n > seq.num_prompt_tokens and seq.token_ids[n - 1] < 0:
        n -= 1
    return n - seq.num_prompt_tokens
