"""vLLM's LLMEngine surface on the fake runner: prompts as generate takes them, priority scheduling, prompt
truncation, output kinds, FlatLogprobs, metrics and the prefix-cache reset (no jax)."""

from __future__ import annotations

import pytest
from bpe_tokenizer import bpe_tokenizer
from engine_fakes import make_engine, reference_greedy

from jaxllm.engine.metrics import Counter, Gauge, Histogram
from jaxllm.outputs import FlatLogprobs
from jaxllm.sampling_params import RequestOutputKind, SamplingParams


def greedy(max_tokens, **kw):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def finish_all(eng):
    """request id -> final output, and the list of every output in order."""
    final, every = {}, []
    while eng.has_unfinished_requests():
        for o in eng.step():
            every.append(o)
            if o.finished:
                final[o.request_id] = o
    return final, every


def test_add_request_takes_text_dicts_and_token_ids():
    tok = bpe_tokenizer()
    eng, _ = make_engine(tokenizer=tok)
    ids = tok("Hello world").input_ids
    eng.add_request("text", "Hello world", greedy(3))
    eng.add_request("textprompt", {"prompt": "Hello world"}, greedy(3))
    eng.add_request("tokens", {"prompt_token_ids": ids}, greedy(3))
    eng.add_request("list", ids, greedy(3))
    eng.add_request("kwargs", "Hello world", greedy(3), tokenization_kwargs={"truncation": True, "max_length": 2})
    final, _ = finish_all(eng)
    assert final["text"].prompt == "Hello world" and final["tokens"].prompt is None
    for rid in ("text", "textprompt", "tokens", "list"):
        assert final[rid].prompt_token_ids == ids
        assert final[rid].outputs[0].token_ids == final["text"].outputs[0].token_ids
    assert final["kwargs"].prompt_token_ids == ids[:2]
    with pytest.raises(ValueError, match="unsupported prompt fields.*multi_modal_data"):
        eng.add_request("mm", {"prompt": "x", "multi_modal_data": {}}, greedy(3))
    with pytest.raises(ValueError, match="LoRA is not enabled; pass enable_lora=True"):
        eng.add_request("lora", ids, greedy(3), lora_request=object())
    assert eng.get_tokenizer() is tok and not eng.has_unfinished_requests()


def test_priority_needs_the_priority_policy():
    eng, _ = make_engine()
    with pytest.raises(ValueError, match="Got priority 1 but Priority scheduling is not enabled"):
        eng.add_request("a", [1, 2], greedy(2), priority=1)
    with pytest.raises(TypeError, match="priority must be an int"):
        eng.add_request("a", [1, 2], greedy(2), priority=1.5)
    eng.add_request("a", [1, 2], greedy(2), priority=0)  # 0 is fine under fcfs


def test_priority_orders_admission_and_outputs_stay_exact():
    # one sequence at a time: the admission order is the finishing order
    eng, _ = make_engine(max_num_seqs=1, scheduling_policy="priority")
    prompts = {"late": [5, 6, 7], "urgent": [8, 9], "mid": [10, 11, 12, 13], "first": [3, 4]}
    prios = {"first": 0, "late": 5, "urgent": -3, "mid": 1}
    for i, (rid, p) in enumerate(prompts.items()):
        eng.add_request(rid, p, greedy(3), priority=prios[rid], arrival_time=100.0 + i)
    order = []
    while eng.has_unfinished_requests():
        order += [o.request_id for o in eng.step() if o.finished]
    assert order == ["urgent", "first", "mid", "late"]


def test_priority_preempts_the_lowest_priority_first():
    # 2 running sequences that each need 4 blocks of 4 tokens, 6 blocks in all: one must be preempted
    eng, _ = make_engine(num_blocks=6, max_num_seqs=2, scheduling_policy="priority", max_model_len=32)
    eng.add_request("low", [1, 2, 3, 4, 5], greedy(10), priority=9, arrival_time=1.0)
    eng.add_request("high", [6, 7, 8, 9, 10], greedy(10), priority=0, arrival_time=2.0)
    final, _ = finish_all(eng)
    assert eng.scheduler.num_preemptions >= 1
    assert final["high"].metrics.first_token_time <= final["low"].metrics.first_token_time
    assert final["high"].metrics.finished_time <= final["low"].metrics.finished_time
    for rid, prompt in (("low", [1, 2, 3, 4, 5]), ("high", [6, 7, 8, 9, 10])):
        assert final[rid].outputs[0].token_ids == reference_greedy(prompt, 10)


def test_truncate_prompt_tokens_keeps_the_last_tokens():
    eng, _ = make_engine(max_model_len=16)
    prompt = list(range(1, 13))
    eng.add_request("k", prompt, greedy(2, truncate_prompt_tokens=5))
    eng.add_request("all", prompt, greedy(2, truncate_prompt_tokens=-1))  # -1: up to max_model_len
    final, _ = finish_all(eng)
    assert final["k"].prompt_token_ids == prompt[-5:]
    assert final["k"].outputs[0].token_ids == reference_greedy(prompt[-5:], 2)
    assert final["all"].prompt_token_ids == prompt
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens value \(20\) is greater than max_model_len"):
        eng.add_request("big", prompt, greedy(2, truncate_prompt_tokens=20))


@pytest.mark.parametrize("kind", list(RequestOutputKind))
def test_output_kinds(kind):
    tok = bpe_tokenizer()
    eng, _ = make_engine(tokenizer=tok)
    eng.add_request("r", "Hello world", greedy(4, logprobs=1, output_kind=kind))
    final, every = finish_all(eng)
    full = final["r"].outputs[0]
    expected = reference_greedy(tok("Hello world").input_ids, 4)
    if kind == RequestOutputKind.FINAL_ONLY:
        assert len(every) == 1 and full.token_ids == expected
        return
    assert len(every) == 4 and [o.finished for o in every] == [False] * 3 + [True]
    if kind == RequestOutputKind.CUMULATIVE:
        assert [o.outputs[0].token_ids for o in every] == [expected[:i] for i in range(1, 5)]
        assert len(full.logprobs) == 4
    else:  # DELTA: each output holds only what is new; together they are the completion
        assert [o.outputs[0].token_ids for o in every] == [[t] for t in expected]
        assert all(len(o.outputs[0].logprobs) == 1 for o in every)
        assert "".join(o.outputs[0].text for o in every) == tok.decode(expected)
        assert every[-1].outputs[0].cumulative_logprob == pytest.approx(
            sum(next(iter(o.outputs[0].logprobs[0].values())).logprob for o in every))


def test_flat_logprobs_index_like_the_list_form():
    outs = {}
    for flat in (False, True):
        eng, _ = make_engine()
        eng.add_request("r", [1, 2, 3, 4], greedy(3, logprobs=2, prompt_logprobs=1, flat_logprobs=flat))
        outs[flat], _ = finish_all(eng)
    plain, flat = outs[False]["r"], outs[True]["r"]
    assert isinstance(flat.outputs[0].logprobs, FlatLogprobs)
    assert isinstance(flat.prompt_logprobs, FlatLogprobs)
    assert len(flat.outputs[0].logprobs) == 3
    assert [flat.outputs[0].logprobs[i] for i in range(3)] == plain.outputs[0].logprobs
    assert flat.prompt_logprobs[0] == {} and plain.prompt_logprobs[0] is None
    assert list(flat.prompt_logprobs)[1:] == plain.prompt_logprobs[1:]
    assert flat.outputs[0].logprobs[1:] == plain.outputs[0].logprobs[1:]


def test_metrics_snapshot_and_prefix_cache_reset():
    eng, _ = make_engine(block_size=4)
    shared = list(range(1, 13))
    eng.add_request("a", shared, greedy(3))
    finish_all(eng)
    eng.add_request("b", shared, greedy(2))  # hits the 2 full blocks a left (8 tokens; 1 token recomputed)
    finish_all(eng)
    metrics = {(m.name, m.labels.get("finished_reason")): m for m in eng.get_metrics()}
    value = lambda name: metrics[(name, None)].value
    assert value("vllm:prompt_tokens") == 24 and value("vllm:generation_tokens") == 5
    assert value("vllm:prefix_cache_queries") == 24 and value("vllm:prefix_cache_hits") == 8
    assert value("vllm:num_preemptions") == 0
    assert isinstance(metrics[("vllm:num_requests_running", None)], Gauge)
    assert isinstance(metrics[("vllm:prompt_tokens", None)], Counter)
    assert metrics[("vllm:request_success", "length")].value == 2
    ttft = metrics[("vllm:time_to_first_token_seconds", None)]
    assert isinstance(ttft, Histogram) and ttft.count == 2 and ttft.buckets["+Inf"] == 2 and ttft.sum >= 0
    counts = list(ttft.buckets.values())
    assert counts == sorted(counts)  # cumulative
    e2e = metrics[("vllm:e2e_request_latency_seconds", None)]
    assert e2e.count == 2 and "0.3" in e2e.buckets
    assert all(m.labels["engine"] == "0" for m in metrics.values())
    for name in ("vllm:request_inference_time_seconds", "vllm:request_prefill_time_seconds",
                 "vllm:request_decode_time_seconds", "vllm:request_time_per_output_token_seconds",
                 "vllm:request_queue_time_seconds"):
        assert metrics[(name, None)].count == 2, name
    steps = metrics[("vllm:iteration_tokens_total", None)]
    assert steps.sum == eng.stats.num_scheduled_tokens and steps.count == eng.stats.num_steps
    # the prefix cache: reset only while no request holds blocks
    eng.add_request("c", shared, greedy(2))
    assert eng.reset_prefix_cache() is False
    eng.abort_request("c")
    assert {(m.name, m.labels.get("finished_reason")): m for m in eng.get_metrics()}[
        ("vllm:request_success", "abort")].value == 1
    assert eng.reset_prefix_cache() is True
    eng.add_request("d", shared, greedy(2))
    final, _ = finish_all(eng)
    assert final["d"].num_cached_tokens == 0
