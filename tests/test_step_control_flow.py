"""No host-driven control flow in the step programs: lowered for CUDA with the sm_90 kernel choices (on the CPU,
tests/cuda_lowering.py), the forward, sampler, prompt-logprobs and KV swap programs of a dense and an MoE model,
the MEAN-pooling forward and the BERT encoder have no XLA while / case / if outside the Pallas kernels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from cuda_lowering import CUDA, encoder_programs, family_programs, host_control_flow, report


def test_finds_loops_and_conditionals_with_their_source_line():
    def f(x, y):
        found = jnp.searchsorted(x, y)  # a while inside a nested jit: reported at this line
        return found, jax.lax.cond(x[0] > 0, lambda: x + 1, lambda: x - 1)

    lowered = jax.jit(f).trace(jnp.arange(8.0), jnp.ones(3)).lower(lowering_platforms=CUDA)
    ops = sorted(host_control_flow(lowered))
    assert [op.split(" at ")[0] for op in ops] == ["stablehlo.case", "stablehlo.while"]
    line = f.__code__.co_firstlineno
    assert f"tests/test_step_control_flow.py:{line + 2}" in ops[0]  # the cond
    assert f"tests/test_step_control_flow.py:{line + 1}" in ops[1] and "searchsorted" in ops[1]


@pytest.mark.parametrize("arch, kernel", [("LlamaForCausalLM", "mosaic_gpu"),
                                          ("Qwen3MoeForCausalLM", "grouped_matmul")])
def test_generate_step_programs(tmp_path, arch, kernel):
    programs = family_programs(arch, str(tmp_path))
    assert report(programs) == {}
    forwards = "".join(p.as_text() for name, p in programs.items() if name.startswith("ForwardKey"))
    assert "triton" in forwards and kernel in forwards  # the GPU kernels were chosen (Mosaic: a 2048-token prefill)
    assert any(name.startswith("SampleKey") for name in programs) and "kv_swap_in" in programs


def test_mean_pooling_forward(tmp_path):
    programs = family_programs("Qwen3ForCausalLM", str(tmp_path), runner="pooling",
                               pooler_config={"pooling_type": "MEAN"})
    assert programs and report(programs) == {}


def test_bert_encoder(tmp_path):
    programs = encoder_programs(str(tmp_path))
    assert programs and report(programs) == {}


def test_sampled_draft_programs(tmp_path):
    """Draft-model speculation: the sampler variants that verify sampled drafts and the draft's sampling
    program have no host-driven control flow either."""
    spec = {"model": str(tmp_path), "num_speculative_tokens": 2}
    programs = family_programs("LlamaForCausalLM", str(tmp_path), speculative_config=spec)
    assert any("sampled_drafts=True" in name for name in programs)
    assert any(name.startswith("draft_sample_") for name in programs)
    assert report(programs) == {}
