"""One LLM used from several threads returns, for each call, exactly what the call returns alone; a call made
from inside another (a use_tqdm callback) is a clear RuntimeError that leaves the outer call's results intact;
an exception escaping generate leaves no request, block or step behind."""

from __future__ import annotations

import threading

import pytest

from jaxllm import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, seed=7, max_tokens=6, ignore_eos=True)


def _prompts(i: int) -> list[dict]:
    return [{"prompt_token_ids": [1 + i, 2 + i, 3 + i, 4]}, {"prompt_token_ids": [9, 8 + i, 7]}]


def _tokens(outs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outs]


def test_threads_get_what_they_get_alone(llama_llm):
    alone = {i: _tokens(llama_llm.generate(_prompts(i), [GREEDY, SEEDED], use_tqdm=False)) for i in range(6)}
    got, errors = {}, []

    def worker(i):
        try:
            got[i] = _tokens(llama_llm.generate(_prompts(i), [GREEDY, SEEDED], use_tqdm=False))
        except Exception as e:  # noqa: BLE001  (reported below with its thread)
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == alone
    assert not llama_llm.llm_engine.has_unfinished_requests()


def test_reentrant_call_from_a_progress_callback(llama_llm):
    expected = _tokens(llama_llm.generate(_prompts(0), GREEDY, use_tqdm=False))
    inner_errors = []

    class Bar:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            try:
                llama_llm.generate(_prompts(1), GREEDY, use_tqdm=False)
            except RuntimeError as e:
                inner_errors.append(e)

        def set_postfix_str(self, *args, **kwargs):
            pass

        def close(self):
            pass

    outs = llama_llm.generate(_prompts(0), GREEDY, use_tqdm=Bar)
    assert _tokens(outs) == expected
    assert inner_errors and "while LLM.generate() is running" in str(inner_errors[0])


def test_callback_error_leaves_the_engine_clean(llama_llm):
    class Boom:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            raise KeyboardInterrupt

        def set_postfix_str(self, *args, **kwargs):
            pass

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        llama_llm.generate(_prompts(0) * 3, GREEDY, use_tqdm=Boom)
    engine = llama_llm.llm_engine
    assert not engine.has_unfinished_requests() and not engine._steps
    assert engine.block_manager.num_free_blocks == engine.num_blocks  # every block back (cached ones too)
    assert _tokens(llama_llm.generate(_prompts(0), GREEDY, use_tqdm=False)) == _tokens(
        llama_llm.generate(_prompts(0), GREEDY, use_tqdm=False))
