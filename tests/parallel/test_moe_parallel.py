"""MoE under tensor_parallel_size=N on 4 fake CPU devices: experts' ffn dim split (Megatron style, default) and
expert parallelism (enable_expert_parallel: whole experts per device). Logits within fp32 tolerance of one
device and identical greedy tokens."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hf_models import save_tiny_model

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.config import ModelConfig
from jaxllm.parallel.sharding import sharding_rules

pytestmark = pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")

EXPERTS = {"num_local_experts": 8, "num_experts_per_tok": 2}
CASES = {
    "mixtral": ("MixtralForCausalLM", dict(EXPERTS, intermediate_size=32)),
    "qwen3moe-mixed": ("Qwen3MoeForCausalLM", dict(EXPERTS, moe_intermediate_size=16, head_dim=16,
                                                   mlp_only_layers=[1])),
    # the shared expert splits like a dense MLP; OLMoE's q/k norms over sharded heads
    "qwen2moe-shared": ("Qwen2MoeForCausalLM", {"num_experts": 8, "num_experts_per_tok": 2,
                                                    "moe_intermediate_size": 16,
                                                    "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]}),
    "olmoe": ("OlmoeForCausalLM", dict(EXPERTS, intermediate_size=32, clip_qkv=0.5, pad_token_id=0, eos_token_id=1)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    arch, overrides = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    save_tiny_model(path, arch, **overrides)
    return path


@pytest.mark.parametrize("expert_parallel", [False, True])
def test_dense_logits_match_one_device(checkpoint, expert_parallel):
    ids = (np.arange(40, dtype=np.int32).reshape(2, 20) * 7) % 256
    ref = np.asarray(jaxllm.load_model(checkpoint)(ids))
    tp = 4
    model = jaxllm.load_model(checkpoint, tensor_parallel_size=tp, enable_expert_parallel=expert_parallel)
    gate_up = model.layers[0].mlp.gate_up[...]  # [E, D, 2, F]
    shard = gate_up.addressable_shards[0].data.shape
    e, d, _, f = gate_up.shape
    assert shard == ((e // tp, d, 2, f) if expert_parallel else (e, d, 2, f // tp))
    out = np.asarray(model(ids))
    assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-5


@pytest.mark.parametrize("name", ["qwen3moe-mixed", "qwen2moe-shared"])
def test_engine_greedy_tokens_match_one_device(tmp_path, name):
    save_tiny_model(tmp_path, CASES[name][0], **CASES[name][1])
    prompts = [{"prompt_token_ids": list(range(1, n))} for n in (30, 8, 17)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)

    def run(**kw):
        llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True, **kw)
        return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]

    assert run(tensor_parallel_size=4, enable_expert_parallel=True) == run()


def test_fp8_experts_split_match_one_device(tmp_path):
    save_tiny_model(tmp_path, CASES["mixtral"][0], **CASES["mixtral"][1])
    ids = (np.arange(24, dtype=np.int32).reshape(2, 12) * 5) % 256
    ref = np.asarray(jaxllm.load_model(tmp_path, quantization="fp8")(ids))
    for expert_parallel in (False, True):
        model = jaxllm.load_model(tmp_path, quantization="fp8", tensor_parallel_size=4,
                                  enable_expert_parallel=expert_parallel)
        scale = model.layers[0].mlp.gate_up.scale[...]  # [E, 2, F]
        assert scale.addressable_shards[0].data.shape == ((2, 2, 32) if expert_parallel else (8, 2, 8))
        assert np.abs(np.asarray(model(ids)) - ref).max() / np.abs(ref).max() <= 1e-5


def test_orbax_conversion_of_fp8_experts_restores_under_expert_parallelism(tmp_path):
    from jaxllm.convert import convert_checkpoint

    save_tiny_model(tmp_path / "hf", CASES["mixtral"][0], **CASES["mixtral"][1])
    convert_checkpoint(str(tmp_path / "hf"), str(tmp_path / "orbax"), quantization="fp8")
    ids = (np.arange(20, dtype=np.int32)[None] * 3) % 256
    ref = np.asarray(jaxllm.load_model(tmp_path / "hf", quantization="fp8")(ids))
    model = jaxllm.load_model(tmp_path / "orbax", tensor_parallel_size=2, enable_expert_parallel=True)
    assert np.abs(np.asarray(model(ids)) - ref).max() / np.abs(ref).max() <= 1e-5


def test_indivisible_splits_are_clear():
    hf = {"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_experts": 6, "num_experts_per_tok": 2,
              "moe_intermediate_size": 12}
    cfg = ModelConfig.from_hf(hf)
    assert sharding_rules(cfg, 2)["moe_mlp"] == "model"
    with pytest.raises(ValueError, match="tensor_parallel_size=4 does not divide num_experts=6"):
        sharding_rules(cfg.with_expert_parallel(True), 4)
    with pytest.raises(ValueError, match="tensor_parallel_size=4 does not divide moe_intermediate_size=6"):
        sharding_rules(ModelConfig.from_hf(dict(hf, moe_intermediate_size=6)), 4)
    with pytest.raises(TypeError, match="enable_expert_parallel must be a bool"):
        LLM("unused", enable_expert_parallel="yes")


@pytest.mark.parametrize("name, expert_parallel", [("mixtral", False), ("mixtral", True),
                                                   ("qwen2moe-shared", False), ("qwen2moe-shared", True)])
def test_step_collectives_one_all_reduce_per_moe_layer(tmp_path, name, expert_parallel):
    """Both splits issue one all-reduce of the [tokens, hidden] activations per MoE layer (the psum of the experts'
    partial sums, Qwen2-MoE's shared expert's included), like a dense MLP's down projection: no expert weight is
    ever gathered."""
    from test_tp_collectives import megatron_minimum, step_collectives

    save_tiny_model(tmp_path, CASES[name][0], **CASES[name][1])
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=16,
              enforce_eager=True, tensor_parallel_size=4, enable_expert_parallel=expert_parallel)
    bucket = llm.llm_engine.runner.ladder.buckets[-1]
    assert step_collectives(llm, bucket) == megatron_minimum(llm, bucket)
