"""fp8 weights in these tests are weight-only unless a test asks for W8A8: the engine's default ("auto") turns fp8
activations on for GPUs with fp8 tensor cores, and the weight-only expectations must hold on such a machine too.
Tests of W8A8 and of the "auto" default set or clear JAXLLM_FP8_ACTIVATIONS themselves."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fp8_weight_only(monkeypatch):
    monkeypatch.setenv("JAXLLM_FP8_ACTIVATIONS", "none")
