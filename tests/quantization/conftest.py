"""fp8 weights in these tests are weight-only unless a test asks for W8A8: the engine's default ("auto") turns fp8
activations on for GPUs with fp8 tensor cores, and the weight-only expectations must hold on such a machine too.
Tests of W8A8 pass fp8_activations (or activations=) themselves; an explicit keyword wins over the variable."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fp8_weight_only(monkeypatch):
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "none")
