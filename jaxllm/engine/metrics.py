"""The engine's statistics as vLLM's metric snapshot (``vllm.v1.metrics.reader``): what ``LLM.get_metrics()``
returns (host side, no jax).

vLLM reads these objects out of its Prometheus registry; jaxllm keeps the same names, types and shapes in plain
Python (counters, histograms with vLLM's bucket bounds), so code written against ``llm.get_metrics()`` reads them
unchanged::

    for m in llm.get_metrics():
        if isinstance(m, Histogram) and m.name == "vllm:time_to_first_token_seconds":
            print(m.count, m.sum, m.buckets["+Inf"])

Every metric carries the labels ``{"model_name": ..., "engine": "0"}`` (one engine per ``LLM``).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter as _Tally
from typing import Any


@dataclasses.dataclass
class Metric:
    """A metric's name (vLLM's, e.g. ``vllm:prompt_tokens``) and its labels."""

    name: str
    labels: dict[str, str]


@dataclasses.dataclass
class Counter(Metric):
    """A monotonically increasing integer counter."""

    value: int


@dataclasses.dataclass
class Vector(Metric):
    """An ordered array of integer counters (vLLM uses it for per-position speculative acceptance only)."""

    values: list[int]


@dataclasses.dataclass
class Gauge(Metric):
    """A value that can go up or down."""

    value: float


@dataclasses.dataclass
class Histogram(Metric):
    """Observations in buckets: ``buckets`` maps each upper bound (as Prometheus prints it, e.g. ``"0.5"``) to
    the number of observations <= it (cumulative); ``"+Inf"`` always exists and equals ``count``."""

    count: int
    sum: float
    buckets: dict[str, int]


# vLLM's bucket bounds (seconds for latencies).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
TOKEN_COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


class HistogramData:
    """Per-bucket counts of observations (bucket i: bounds[i-1] < v <= bounds[i]; the last: above all)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self, name: str, labels: dict[str, str]) -> Histogram:
        buckets, total = {}, 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            buckets[repr(bound)] = total
        total += self.counts[-1]
        buckets["+Inf"] = total
        return Histogram(name=name, labels=dict(labels), count=total, sum=self.sum, buckets=buckets)


class RequestStats:
    """Per-request observations, recorded when a request finishes."""

    def __init__(self) -> None:
        self.ttft = HistogramData(TTFT_BUCKETS)
        self.e2e = HistogramData(REQUEST_LATENCY_BUCKETS)
        self.queue_time = HistogramData(REQUEST_LATENCY_BUCKETS)
        self.inference_time = HistogramData(REQUEST_LATENCY_BUCKETS)  # first scheduled -> last token
        self.prefill_time = HistogramData(REQUEST_LATENCY_BUCKETS)  # first scheduled -> first token
        self.decode_time = HistogramData(REQUEST_LATENCY_BUCKETS)  # first token -> last token
        self.time_per_output_token = HistogramData(TPOT_BUCKETS)  # decode time / (tokens - 1)
        self.iteration_tokens = HistogramData(ITERATION_TOKEN_BUCKETS)  # tokens computed per engine step
        self.prompt_tokens = HistogramData(TOKEN_COUNT_BUCKETS)
        self.generation_tokens = HistogramData(TOKEN_COUNT_BUCKETS)
        self.finished = _Tally()  # finished_reason -> requests

    def record(self, metrics: Any, num_prompt_tokens: int, num_generation_tokens: int, reasons: list[str]) -> None:
        """``metrics``: the request's RequestMetrics (times); ``reasons``: its samples' finish reasons."""
        if metrics.first_token_time is not None:
            self.ttft.observe(metrics.first_token_time - metrics.arrival_time)
        scheduled, first, last = metrics.first_scheduled_time, metrics.first_token_time, metrics.last_token_time
        if scheduled is not None:
            self.queue_time.observe(scheduled - metrics.arrival_time)
        if scheduled is not None and first is not None:
            self.prefill_time.observe(first - scheduled)
            self.inference_time.observe(last - scheduled)
            self.decode_time.observe(last - first)
            if num_generation_tokens > 1:
                self.time_per_output_token.observe((last - first) / (num_generation_tokens - 1))
        self.e2e.observe(metrics.finished_time - metrics.arrival_time)
        self.prompt_tokens.observe(num_prompt_tokens)
        self.generation_tokens.observe(num_generation_tokens)
        # a request with several samples counts once, under its first sample's reason (vLLM: the parent's)
        self.finished[reasons[0] if reasons else "stop"] += 1


def snapshot(engine: Any, labels: dict[str, str]) -> list[Metric]:
    """The engine's metrics now: counters since start-up, gauges of the current state, request histograms."""
    sched, bm, stats, req = engine.scheduler, engine.block_manager, engine.stats, engine.request_stats
    running = {s.request_id for s in sched.running}
    waiting = {s.request_id for s in sched.waiting} - running
    out: list[Metric] = [
        Gauge("vllm:num_requests_running", dict(labels), float(len(running))),
        Gauge("vllm:num_requests_waiting", dict(labels), float(len(waiting))),
        Gauge("vllm:kv_cache_usage_perc", dict(labels), float(bm.usage)),
        Counter("vllm:num_preemptions", dict(labels), int(sched.num_preemptions)),
        Counter("vllm:prompt_tokens", dict(labels), int(stats.num_prompt_tokens)),
        Counter("vllm:generation_tokens", dict(labels), int(sched.num_generated_tokens)),
        Counter("vllm:prefix_cache_queries", dict(labels), int(sched.prefix_cache_queries)),
        Counter("vllm:prefix_cache_hits", dict(labels), int(sched.prefix_cache_hits)),
    ]
    if bm.host is not None:  # the host tier (swap_space): vLLM v0's swap gauges, and its copy counters
        host = bm.host
        swapped = {s.request_id for s in sched.waiting if s.host_blocks}
        out += [
            Gauge("vllm:num_requests_swapped", dict(labels), float(len(swapped))),
            Gauge("vllm:cpu_cache_usage_perc", dict(labels), 1.0 - host.num_free_slots / host.num_slots),
            Counter("vllm:kv_swapped_out_blocks", dict(labels), int(host.num_swapped_out)),
            Counter("vllm:kv_swapped_in_blocks", dict(labels), int(host.num_swapped_in)),
            Counter("vllm:host_prefix_cache_hits", dict(labels), int(host.prefix_hits)),
        ]
    for reason in ("stop", "length", "abort", "error"):
        out.append(Counter("vllm:request_success", {**labels, "finished_reason": reason}, req.finished[reason]))
    out += [
        req.ttft.snapshot("vllm:time_to_first_token_seconds", labels),
        req.e2e.snapshot("vllm:e2e_request_latency_seconds", labels),
        req.queue_time.snapshot("vllm:request_queue_time_seconds", labels),
        req.inference_time.snapshot("vllm:request_inference_time_seconds", labels),
        req.prefill_time.snapshot("vllm:request_prefill_time_seconds", labels),
        req.decode_time.snapshot("vllm:request_decode_time_seconds", labels),
        req.time_per_output_token.snapshot("vllm:request_time_per_output_token_seconds", labels),
        req.iteration_tokens.snapshot("vllm:iteration_tokens_total", labels),
        req.prompt_tokens.snapshot("vllm:request_prompt_tokens", labels),
        req.generation_tokens.snapshot("vllm:request_generation_tokens", labels),
    ]
    spec = sched.speculation
    if spec is not None:  # vLLM reports these only with speculative decoding on
        out += [
            Counter("vllm:spec_decode_num_drafts", dict(labels), spec.num_drafts),
            Counter("vllm:spec_decode_num_draft_tokens", dict(labels), spec.num_draft_tokens),
            Counter("vllm:spec_decode_num_accepted_tokens", dict(labels), spec.num_accepted_tokens),
            Vector("vllm:spec_decode_num_accepted_tokens_per_pos", dict(labels),
                   list(spec.num_accepted_tokens_per_pos)),
        ]
    return out
