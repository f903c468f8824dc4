"""A sampling row the runner flags as non-finite (``RunnerOutput.nonfinite``: NaN / inf logits, or no token left)
ends its sequence with finish_reason "error" and the tokens before it; every other request is unchanged, with
and without asynchronous scheduling (a placeholder for the missing token is dropped) and speculative decoding,
and the engine holds no request or block afterwards."""

from __future__ import annotations

import engine_fakes
import pytest
from engine_fakes import AsyncCacheCheckingRunner, CacheCheckingRunner, make_engine
from test_engine_spec_decode import REPEAT, SPEC, AsyncSpecRunner, SpecRunner

from jaxllm.engine import LLMEngine
from jaxllm.sampling_params import SamplingParams

POISONED = (3, 1, 4)  # the prompt whose row turns non-finite at output index POISON_AT
POISON_AT = 2


def _poison(batch, out, at: int = POISON_AT) -> None:
    """Flag the row of ``POISONED``'s output index ``at`` as the real runner does (no sampled token; a
    speculative sequence keeps the tokens of the rows before it)."""
    for s in batch.seqs:
        if not s.sample or tuple(s.token_ids[:s.num_prompt_tokens]) != POISONED:
            continue
        if s.draft_token_ids:
            emitted = out.accepted[s.seq_id]
            if s.output_index <= at < s.output_index + len(emitted):
                out.accepted[s.seq_id] = emitted[:at - s.output_index]
                out.accepted_logprobs.pop(s.seq_id, None)
                out.nonfinite.add(s.seq_id)
        elif s.output_index == at:
            del out.sampled[s.seq_id]
            out.logprobs.pop(s.seq_id, None)
            out.nonfinite.add(s.seq_id)


def _nan_runner(base):
    class NanRunner(base):
        """``base`` whose outputs (as the engine fetches them) carry the flag; the token the device computed
        stays what the next step's placeholder reads, as on device."""

        def execute(self, batch):
            out = super().execute(batch)
            _poison(batch, out)
            return out

        def dispatch(self, batch):
            out = super().dispatch(batch)
            out.batch_for_test = batch
            return out

        def fetch(self, out):
            out = super().fetch(out)
            _poison(out.batch_for_test, out)
            return out

    return NanRunner


def _run(eng, requests):
    for i, (prompt, params) in enumerate(requests):
        eng.add_request(str(i), list(prompt), params)
    outs = {}
    while eng.has_unfinished_requests():
        for o in eng.step():
            outs[o.request_id] = o
    return [[(c.token_ids, c.finish_reason) for c in outs[str(i)].outputs] for i in range(len(requests))]


def _engine(spec=None):
    if spec is None:
        base = AsyncCacheCheckingRunner if engine_fakes.DEFAULT_ASYNC else CacheCheckingRunner
        runner = _nan_runner(base)(64, 4, 4, 32, {POISONED: REPEAT * 3})
        return make_engine(num_blocks=64, block_size=4, max_num_seqs=4, max_num_batched_tokens=32,
                           max_model_len=96, runner=runner)[0]
    base = AsyncSpecRunner if engine_fakes.DEFAULT_ASYNC else SpecRunner
    runner = _nan_runner(base)(64, 4, 4, 32, {POISONED: REPEAT * 3})
    return LLMEngine(runner, vocab_size=engine_fakes.VOCAB, eos_token_ids=(0,),
                     async_scheduling=engine_fakes.DEFAULT_ASYNC, speculative_config=spec, num_blocks=64,
                     block_size=4, max_num_seqs=4, max_num_batched_tokens=32, max_model_len=96)


OTHERS = [([10, 11, 12], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)),
          ([20, 21], SamplingParams(temperature=1.0, seed=5, max_tokens=8, ignore_eos=True, logprobs=1))]


@pytest.mark.parametrize("spec", [None, SPEC], ids=["plain", "speculative"])
@pytest.mark.parametrize("logprobs", [None, 2])
def test_flagged_row_finishes_its_request_with_error(spec, logprobs):
    alone = _run(_engine(spec), OTHERS)
    eng = _engine(spec)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True, logprobs=logprobs)
    got = _run(eng, [OTHERS[0], (POISONED, params), OTHERS[1]])
    assert got[1] == [((REPEAT * 3)[:POISON_AT], "error")]
    assert [got[0], got[2]] == alone
    assert not eng.has_unfinished_requests() and eng.block_manager.num_free_blocks == eng.num_blocks


def test_every_sample_of_a_flagged_prompt_errors_and_metrics_count_it():
    eng = _engine()
    got = _run(eng, [(POISONED, SamplingParams(n=2, temperature=1.0, seed=2, max_tokens=20, ignore_eos=True))])
    assert got == [[((REPEAT * 3)[:POISON_AT], "error")] * 2]
    success = {m.labels["finished_reason"]: m.value for m in eng.get_metrics() if m.name == "vllm:request_success"}
    assert success == {"stop": 0, "length": 0, "abort": 0, "error": 1}
