"""The communication GSPMD puts in a tensor-parallel step: exactly what a hand-written (shard_map + psum)
Megatron layout would issue, so explicit collectives could not move fewer bytes. Per step: one all-reduce of the
[tokens, hidden] activations after each row-parallel projection (o_proj, down: 2 per layer), one after the
vocab-parallel embedding lookup, and one all-gather of the [sequences, vocab] logits; no weight is ever
gathered. Read from the optimized HLO of a compiled step program on 4 fake CPU devices."""

from __future__ import annotations

import re

import jax
import pytest
from hf_models import save_tiny_model

from jaxllm import LLM
from jaxllm.runner.programs import ForwardKey

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

COLLECTIVE = re.compile(r"= (\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(")


def step_collectives(llm, bucket) -> list[tuple[str, str]]:
    """The sorted (op, result shape) of every collective in the compiled step program of ``bucket``."""
    text = llm.llm_engine.runner.programs.get(ForwardKey(bucket)).as_text()
    return sorted((op, re.sub(r"\{.*\}", "", shape)) for shape, op in COLLECTIVE.findall(text))


def megatron_minimum(llm, bucket) -> list[tuple[str, str]]:
    """What ``step_collectives`` finds in a Megatron layout: an all-reduce of the [tokens, hidden] activations
    after each layer's two row-parallel projections (attention's output, the MLP's or MoE block's down) and after
    the embedding lookup, an all-gather of the [sequences, vocab] logits."""
    cfg = llm.model_config
    activations = ("all-reduce", f"f32[{bucket.num_tokens},{cfg.hidden_size}]")
    return sorted([activations] * (2 * cfg.num_layers + 1) + [("all-gather", f"f32[{bucket.num_seqs},{cfg.vocab_size}]")])


@pytest.mark.parametrize("layers,tp", [(2, 2), (3, 2), (2, 4)])
def test_step_collectives_are_the_megatron_minimum(tmp_path, layers, tp):
    save_tiny_model(tmp_path, "LlamaForCausalLM", num_hidden_layers=layers)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
              enforce_eager=True, tensor_parallel_size=tp)
    assert llm.model_config.num_layers == layers
    ladder = llm.llm_engine.runner.ladder
    for bucket in (ladder.buckets[0], ladder.buckets[-1]):  # the smallest (decode) and largest
        assert step_collectives(llm, bucket) == megatron_minimum(llm, bucket), bucket
