"""Benchmark presets and the table rebuilt from committed results (``jaxllm bench --summarize``)."""

from __future__ import annotations

import json
import os
import re

import pytest

from jaxllm.bench.main import parse_args
from jaxllm.bench.presets import PRESETS, preset_args
from jaxllm.bench.report import summarize
from jaxllm.cli import main as cli_main

REPO = os.path.join(os.path.dirname(__file__), "..")


def fake_result(preset: str, tok_s: float, command: str = "jaxllm bench --workload B2", **extra) -> dict:
    return {"workload": {"name": "B2", "num_requests": 1000}, "preset": preset, "command": command,
            "jaxllm": {"output_tok_s": tok_s, "total_tok_s": 3 * tok_s, "startup_s": 30.0,
                       "device": "NVIDIA H200", "gpu_busy": {"mean_pct": 97.6}},
            "roofline": {"output_tok_s": 2 * tok_s}, "pct_roofline_output": 50.0, **extra}


def test_every_preset_parses_and_later_arguments_override():
    for name in PRESETS:
        args = parse_args(["--preset", name])
        assert args.workload or args.config, name
        assert PRESETS[name].baseline in (None, *PRESETS), name
    args = parse_args(["--preset", "decode64-awq", "--num-requests", "8"])
    assert args.quantization == "awq" and args.num_requests == 8 and args.output_len == [1024, 1024]
    with pytest.raises(ValueError, match="unknown benchmark preset 'b9'"):
        preset_args("b9")


def test_summary_rows_ratios_and_peers(tmp_path):
    d = tmp_path / "throughput"
    d.mkdir()
    b2 = fake_result("b2", 9000.0, "jaxllm bench --workload B2 --output /x/y.json")
    (d / "b2.json").write_text(json.dumps(b2))
    (d / "b2-awq.json").write_text(json.dumps(fake_result("b2-awq", 8100.0)))
    (d / "b1-peer.json").write_text(json.dumps(fake_result(
        "b1-peer", 28000.0, peer_hf={"num_requests": 1000, "output_tok_s": 700.0, "transformers": "5.17"})))
    peer = {"peer": "EasyDeL eSurge", "workload": "8B dims", "card": "H100", "output_tok_s": 1000,
            "jaxllm_output_tok_s": 8000, "source": "BENCHMARKS.md"}
    (tmp_path / "peers.json").write_text(json.dumps([peer]))
    text = summarize(str(tmp_path))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`b1-peer`", "`b2`", "`b2-awq`"]  # preset order
    assert "| 9,000 | 27,000 | 50.0% of 18,000 | - | 98% | 30 | - |" in rows[1]
    assert rows[2].endswith("| - |")  # no same-machine baseline recorded: no ratio
    assert "| 700 | 28,000 | 40.0x |" in text
    assert "| EasyDeL eSurge | 8B dims | H100 | 1,000 | 8,000 | 8.0x |" in text
    assert "- `b2`: `jaxllm bench --workload B2`" in text  # the machine's output path is dropped

    # as on one device call's output: each result gets its same-machine baseline
    assert cli_main(["bench", "--summarize", str(tmp_path), "--same-machine"]) == 0
    saved = json.loads((d / "b2-awq.json").read_text())
    assert saved["baseline"] == {"preset": "b2", "output_tok_s": 9000.0}
    assert "| 0.90x b2 |" in (tmp_path / "README.md").read_text()


def test_committed_benchmark_table_is_current():
    """benchmarks/README.md is what ``jaxllm bench --summarize benchmarks/`` writes from the committed JSONs,
    and every row is a preset."""
    bench = os.path.join(REPO, "benchmarks")
    with open(os.path.join(bench, "README.md")) as f:
        committed = f.read()
    assert committed == summarize(bench)
    for name in re.findall(r"^\| `([^`]+)`", committed, flags=re.MULTILINE):
        assert name in PRESETS, name
