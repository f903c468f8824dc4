"""Measured peaks of the GPUs jaxllm is measured on (plain Python: the engine's cost rules use them too).

Each card's bf16 matmul FLOP/s through jitted JAX and device-to-device copy bytes (read + written) per second
through PyTorch, measured as ../shared/BENCHMARKS.md measured the H200's (scripts/device_peaks.py). The H200's
are the reference: the benchmark roofline and every target use them (jaxllm/bench/roofline.py); a run on
another card is also held to its own (jaxllm/bench/card_roofline.py).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CardPeaks:
    """A card's measured peaks: bf16 matmul FLOP/s through JAX, device copy bytes (read + written) per second."""
    matmul_flops: float
    copy_bytes_per_s: float
    source: str


REFERENCE_CARD = "H200"
CARD_PEAKS = {
    REFERENCE_CARD: CardPeaks(783e12, 4.3e12, "../shared/BENCHMARKS.md"),
    "H100": CardPeaks(783e12, 3.03e12, "benchmarks/h100/peaks.json (H100 80GB HBM3)"),
}


def card_name(device_kind: str) -> str | None:
    """The CARD_PEAKS key of a JAX ``device_kind`` ("NVIDIA H100 80GB HBM3" -> "H100"), or None."""
    return next((name for name in CARD_PEAKS if name in device_kind.upper()), None)


def card_peaks(device_kind: str) -> CardPeaks:
    """The peaks of the card ``device_kind`` names, or the reference card's for a GPU not measured."""
    return CARD_PEAKS[card_name(device_kind) or REFERENCE_CARD]
