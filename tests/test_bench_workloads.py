"""The bench's sampling settings and the ShareGPT-like workload (jaxllm/bench/workloads.py, presets.py)."""

import dataclasses
import json

import numpy as np

from jaxllm import SamplingParams
from jaxllm.bench.main import parse_args, workload_from_args
from jaxllm.bench.presets import PRESETS
from jaxllm.bench.workloads import WORKLOADS, Workload


def test_sharegpt_lengths_are_lognormal_within_bounds_and_deterministic():
    w = WORKLOADS["ShareGPT"]
    prompts, outs = w.requests(1000)
    plens, outs = np.array([len(p) for p in prompts]), np.array(outs)
    assert len(prompts) == 2000 and plens.min() >= 4 and outs.min() >= 4
    assert plens.max() <= 1024 and outs.max() <= 1024
    assert 120 < plens.mean() < 170 and 260 < outs.mean() < 350  # the paper's means, less the clipped tails
    assert np.median(plens) < 0.75 * plens.mean()  # a long right tail, unlike a uniform range
    again, _ = w.requests(1000)
    assert again == prompts
    assert Workload.from_json(json.dumps(dataclasses.asdict(w))) == w


def test_sampling_settings_reach_every_request():
    w = WORKLOADS["ShareGPT"]
    params = [SamplingParams(**w.sampling_kwargs(i), max_tokens=4) for i in range(3)]
    assert [p.seed for p in params] == [0, 1, 2]
    assert all(p.top_p == 0.95 and p.temperature == 0.8 for p in params)
    assert "seed" not in WORKLOADS["B1"].sampling_kwargs(0)


def test_truncation_presets_compare_with_b1():
    expect = {"b1-topp": {"top_p": 0.95}, "b1-topk": {"top_k": 50}, "b1-minp": {"min_p": 0.05},
              "b1-topk-topp": {"top_k": 50, "top_p": 0.95}, "b1-topp-minp": {"top_p": 0.95, "min_p": 0.05}}
    for name, fields in expect.items():
        assert PRESETS[name].baseline == "b1"
        w = workload_from_args(parse_args(["--preset", name]))
        assert all(getattr(w, f) == v for f, v in fields.items()) and w.temperature == WORKLOADS["B1"].temperature
        assert w.prompt_len == WORKLOADS["B1"].prompt_len
    plain = workload_from_args(parse_args(["--preset", "sharegpt-plain"]))
    assert plain.top_p == 1.0 and plain.num_requests == 2000 and PRESETS["sharegpt"].baseline == "sharegpt-plain"
    assert workload_from_args(parse_args(["--workload", "B1", "--per-request-seeds"])).per_request_seeds


def test_bench_passes_truncation_settings(tmp_path):
    from test_bench import TINY

    from jaxllm.bench.main import main

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    result = main(["--config", str(cfg), "--num-requests", "3", "--prompt-len", "4", "8", "--output-len", "5", "5",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "16", "--enforce-eager",
                   "--temperature", "0.8", "--top-p", "0.9", "--top-k", "5", "--min-p", "0.01", "--per-request-seeds"])
    assert result["workload"]["top_p"] == 0.9 and result["workload"]["per_request_seeds"]
    assert result["jaxllm"]["output_tokens"] == 15
