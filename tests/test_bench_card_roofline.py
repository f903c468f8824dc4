"""The per-card roofline: a saved result's command rebuilds the same requests (so the reference bound it stored
comes out again), and a card with lower peaks gets a lower bound and a higher fraction."""

import json
import shutil

import pytest

from jaxllm import hardware
from jaxllm.bench.card_roofline import add_to_saved
from jaxllm.hardware import CardPeaks, card_name

SAVED = "benchmarks/h100/throughput/b1.json"


def test_card_name_matches_device_kind(monkeypatch):
    monkeypatch.setitem(hardware.CARD_PEAKS, "H100", CardPeaks(1.0, 1.0, "test"))
    assert card_name("NVIDIA H100 80GB HBM3") == "H100"
    assert card_name("NVIDIA H200") == "H200"
    assert card_name("cpu") is None


def test_saved_result_gets_its_card_roofline(tmp_path, monkeypatch):
    with open(SAVED) as f:
        saved = json.load(f)
    shutil.copy(SAVED, tmp_path / "b1.json")
    reference = hardware.CARD_PEAKS["H200"]
    # the reference peaks give back the stored reference bound: the command rebuilt the same requests
    monkeypatch.setitem(hardware.CARD_PEAKS, "H100", CardPeaks(reference.matmul_flops,
                                                                    reference.copy_bytes_per_s, "test"))
    assert add_to_saved(str(tmp_path)) == [str(tmp_path / "b1.json")]
    with open(tmp_path / "b1.json") as f:
        same = json.load(f)
    assert same["card_roofline"]["output_tok_s"] == pytest.approx(saved["roofline"]["output_tok_s"], rel=1e-9)
    assert same["pct_card_roofline_output"] == pytest.approx(saved["pct_roofline_output"], rel=1e-9)
    # a card with 70% of the bandwidth: a decode-bound workload's bound drops, its fraction rises
    monkeypatch.setitem(hardware.CARD_PEAKS, "H100", CardPeaks(reference.matmul_flops,
                                                                    0.7 * reference.copy_bytes_per_s, "test"))
    add_to_saved(str(tmp_path))
    with open(tmp_path / "b1.json") as f:
        slower = json.load(f)
    assert slower["card_roofline"]["output_tok_s"] < 0.8 * saved["roofline"]["output_tok_s"]
    assert slower["pct_card_roofline_output"] > 1.2 * saved["pct_roofline_output"]
    assert slower["card_roofline"]["card"] == "H100"
