"""vLLM's documented offline examples, ported by changing the import (and the model: the embedded default),
run against the real engine through the harness in conftest.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from jaxllm.engine_args import EngineArgs


def test_basic(run_example):
    outputs, printed = run_example("basic.py")
    assert len(outputs) == 4 and printed.count("Output:") == 4
    for out in outputs:
        assert 1 <= len(out.outputs[0].token_ids) <= 16 and out.outputs[0].text  # max_tokens=16 by default
        assert out.finished and out.outputs[0].finish_reason in ("stop", "length")


def test_chat(run_example):
    outputs, printed = run_example("chat.py")
    assert "<|im_start|>user\nHello<|im_end|>" in outputs[0].prompt  # the text part, as a string
    assert printed.count("Generated text:") == 1 + 4 + 1
    assert "You are a helpful assistant<|im_end|>" in printed


def test_logprobs(run_example):
    outputs, _ = run_example("logprobs.py")
    for out in outputs:
        completion = out.outputs[0]
        assert len(completion.logprobs) == len(completion.token_ids)
        for token_id, top in zip(completion.token_ids, completion.logprobs):
            assert token_id in top and len(top) >= 5 and top[token_id].rank == 1  # greedy: the top token
        assert completion.cumulative_logprob == pytest.approx(
            sum(top[t].logprob for t, top in zip(completion.token_ids, completion.logprobs)), abs=1e-4)
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(out.prompt_token_ids)


def test_prefix_caching(run_example):
    (same, outputs), printed = run_example("prefix_caching.py")
    assert same and "Generated answers are the same: True" in printed
    assert all(out.num_cached_tokens > 0 for out in outputs)


def test_priority(run_example):
    outputs, _ = run_example("priority.py")
    first = [out.metrics.first_scheduled_time for out in outputs]
    assert max(first[2:]) <= min(first[:2])  # priorities [3, 2, 1, 0] with max_num_seqs=2
    assert all(out.outputs[0].text for out in outputs)


@pytest.mark.skipif("disable_log_stats" not in {f.name for f in dataclasses.fields(EngineArgs)},
                    reason="LLM(disable_log_stats=...) is not a constructor keyword yet")
def test_metrics(run_example):
    metrics, printed = run_example("metrics.py")
    by_name = {m.name: m for m in metrics if "finished_reason" not in m.labels}
    assert by_name["vllm:generation_tokens"].value > 0 and by_name["vllm:prompt_tokens"].value > 0
    assert by_name["vllm:time_to_first_token_seconds"].count == 4
    assert "vllm:e2e_request_latency_seconds (histogram)" in printed
