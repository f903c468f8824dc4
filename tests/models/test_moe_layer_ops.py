"""One MoE layer at Qwen3-30B-A3B's dimensions, lowered for CUDA with the sm_90 choices (tests/moe_lowering.py),
at a prefill-sized (8192 tokens: M = 65,536 rows) and a decode-sized step (256 tokens): the two grouped matmuls
are Triton kernels (gate_up's applies SwiGLU before its store), and around them no cumsum (reduce_window: a multi-level scan of pads and adds on the GPU), no
pad copy, no loop, one sort and one scatter (the inverse permutation, [M] int32)."""

from __future__ import annotations

import pytest
from moe_lowering import QWEN3_30B_A3B, layer_ops


@pytest.mark.parametrize("tokens", [8192, 256])
def test_one_moe_layer_runs_few_xla_ops(tokens):
    counts, text = layer_ops(tokens, **QWEN3_30B_A3B)
    # gate_up with SwiGLU in its epilogue (writes silu(gate) * up), down
    assert "grouped_matmul_swiglu_bm" in text and "grouped_matmul_bm" in text
    assert counts["stablehlo.custom_call"] == 2
    assert counts["stablehlo.reduce_window"] == 0
    assert counts["stablehlo.pad"] == 0 and counts["stablehlo.concatenate"] == 0
    assert counts["stablehlo.while"] == 0 and counts["stablehlo.case"] == 0
    assert counts["stablehlo.sort"] == 1 and counts["stablehlo.scatter"] == 1
    assert counts["stablehlo.reduce"] <= 8  # softmax (2), top-k renormalization, group sizes, layout (4)
