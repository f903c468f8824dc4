"""The roofline of a run on the card it ran on.

../shared/BENCHMARKS.md defines the roofline with the H200's measured peaks (783 TFLOP/s bf16 matmul, 4.3 TB/s
device copy), and every issue target is a fraction of that bound. A run on another card is held to that same
bound (``roofline``), so its fraction says how far it is from the H200 target; and, when that card's own peaks
were measured the same way (scripts/device_peaks.py), to its own bound as well (``card_roofline``), which says
how well the engine uses the card it ran on. The two differ only in the peaks.

    python scripts/card_roofline.py benchmarks/h100     # add card_roofline to results measured before
"""

from __future__ import annotations

import glob
import json
import os
import shlex

from jaxllm.hardware import CARD_PEAKS, REFERENCE_CARD, card_name


def card_fields(device_kind: str, compute) -> dict:
    """``card_roofline`` and its fractions for a run on ``device_kind``, or {} on the reference card or a card
    whose peaks were not measured. ``compute(peaks: CardPeaks) -> roofline dict`` computes the bound."""
    name = card_name(device_kind)
    if name is None or name == REFERENCE_CARD:
        return {}
    roof = compute(CARD_PEAKS[name])
    return {"card_roofline": {**roof, "card": name, "peaks_source": CARD_PEAKS[name].source}}


def with_card_fractions(result: dict) -> dict:
    """``result`` with ``pct_card_roofline_output/total`` from its ``card_roofline`` (when it has one)."""
    roof = result.get("card_roofline")
    if roof:
        ours = result["jaxllm"]
        result["pct_card_roofline_output"] = 100 * ours["output_tok_s"] / roof["output_tok_s"]
        result["pct_card_roofline_total"] = 100 * ours["total_tok_s"] / roof["total_tok_s"]
    return result


def add_to_saved(directory: str) -> list[str]:
    """Recompute ``card_roofline`` for every generation result under ``directory`` (or its throughput/) from the
    command it records (same workload, same seed, same requests), and write it back. Returns the files changed."""
    from jaxllm.bench.main import bench_roofline, parse_args
    from jaxllm.bench.report import results_dir

    changed = []
    for path in sorted(glob.glob(os.path.join(results_dir(directory), "*.json"))):
        with open(path) as f:
            result = json.load(f)
        if not (isinstance(result, dict) and "jaxllm" in result and "roofline" in result):
            continue
        args = parse_args(shlex.split(result["command"])[2:])  # after "jaxllm bench"
        fp8 = result["jaxllm"]["fp8_activations"]
        fields = card_fields(result["jaxllm"]["device"],
                             lambda peaks, args=args, fp8=fp8: bench_roofline(args, fp8, peaks))
        if fields:
            result = with_card_fractions({**result, **fields})
            with open(path, "w") as f:
                json.dump(result, f, indent=2)
            changed.append(path)
    return changed

