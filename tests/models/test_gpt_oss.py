"""gpt-oss (GptOssForCausalLM) against transformers on a tiny random checkpoint (tests/models/gpt_oss_cases.py):
fp32 logits within 1e-4, greedy LLM.generate token-identical with chunked prefill, prefix caching and prompts
longer than the sliding window, tensor parallelism on 4 CPU devices (experts' ffn dim split and
enable_expert_parallel), strict loading of the sinks and stacked experts, and the config's checks."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gpt_oss_cases import WINDOW, save_gpt_oss
from hf_models import check_greedy_prefix_cache, hf_greedy
from jaxllm.ops.grouped_matmul.dispatch import swiglu_clamped
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.config import ModelConfig
from jaxllm.models.gpt_oss_moe import GptOssMoeBlock
from jaxllm.weights.loader import WeightLoadError

_SAVED: dict = {}


def saved(tmp_path_factory):
    """(path, HF model) of the tiny gpt-oss, built once per test session."""
    if "model" not in _SAVED:
        path = tmp_path_factory.mktemp("gpt_oss")
        _SAVED["model"] = path, save_gpt_oss(path)
    return _SAVED["model"]


def _ids():
    return np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)  # 24 tokens: 3 windows


def test_logits_match_transformers(tmp_path_factory):
    path, hf = saved(tmp_path_factory)
    model = jaxllm.load_model(path)
    cfg = model.config
    assert cfg.sliding_windows == (WINDOW, None, WINDOW, None) and cfg.attention_sinks
    assert all(isinstance(layer.mlp, GptOssMoeBlock) for layer in model.layers)
    with torch.no_grad():
        ref = hf(torch.tensor(_ids(), dtype=torch.long)).logits.numpy()
    ours = np.asarray(model(_ids()))
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4
    # the parity means something only if routing spreads, the clamp bites and the sinks matter
    x = jnp.asarray(np.random.RandomState(2).randn(64, cfg.hidden_size), jnp.float32)
    block = model.layers[0].mlp
    _, experts = block.route(x)
    assert len(set(np.asarray(experts).ravel().tolist())) == cfg.num_experts
    gu = np.einsum("td,edcf->tecf", np.asarray(x), np.asarray(block.gate_up[...]))
    assert (gu[:, :, 0] > cfg.swiglu_limit).any() and (np.abs(gu[:, :, 1]) > cfg.swiglu_limit).any()
    for layer in model.layers:
        layer.self_attn.sinks = type(layer.self_attn.sinks)(jnp.full_like(layer.self_attn.sinks[...], -1e9))
    assert np.abs(np.asarray(model(_ids())) - ours).max() / np.abs(ref).max() > 1e-2


def test_router_is_softmax_over_the_top_k_biased_logits():
    x = jnp.asarray(np.random.RandomState(0).randn(5, 8), jnp.float32)
    cfg = ModelConfig.from_hf({**_hf_config(), "hidden_size": 8, "num_local_experts": 6, "num_experts_per_tok": 3,
                               "intermediate_size": 4})
    block = GptOssMoeBlock(cfg, jnp.float32, nnx.Rngs(0))
    bias = np.linspace(-2, 2, 6).astype(np.float32)
    block.router_logit_bias = type(block.router_logit_bias)(jnp.asarray(bias))
    weights, experts = block.route(x)
    logits = np.asarray(x) @ np.asarray(block.router[...]) + bias
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :3]
    np.testing.assert_array_equal(np.sort(np.asarray(experts), -1), np.sort(top, -1))
    chosen = np.take_along_axis(logits, np.asarray(experts), -1)
    want = np.exp(chosen - chosen.max(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(weights), want / want.sum(-1, keepdims=True), rtol=1e-5)


def test_clamped_swiglu_matches_transformers():
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    cfg = type("C", (), {"intermediate_size": 5, "num_local_experts": 1, "hidden_size": 4, "swiglu_alpha": 1.702,
                         "swiglu_limit": 7.0})()
    gate_up = torch.linspace(-12, 12, 2 * 5 * 3).reshape(3, 10)
    want = GptOssExperts(cfg)._apply_gate(gate_up).numpy()
    g = np.asarray(gate_up)
    got = swiglu_clamped(jnp.asarray(g[:, ::2]), jnp.asarray(g[:, 1::2]), 1.702, 7.0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def test_greedy_chunked_prefill_and_prefix_cache(tmp_path_factory):
    path, hf = saved(tmp_path_factory)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, block_size=8,
              max_model_len=128, enforce_eager=True, enable_prefix_caching=True)
    check_greedy_prefix_cache(llm, hf)


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
def test_tensor_parallel_matches_one_device(tmp_path_factory):
    path, _ = saved(tmp_path_factory)
    ref = np.asarray(jaxllm.load_model(path)(_ids()))
    for expert_parallel in (False, True):
        model = jaxllm.load_model(path, tensor_parallel_size=4, enable_expert_parallel=expert_parallel)
        block = model.layers[0].mlp
        shard = block.gate_up_bias[...].addressable_shards[0].data.shape
        assert shard == ((1, 2, 32) if expert_parallel else (4, 2, 8))
        assert model.layers[0].self_attn.sinks[...].addressable_shards[0].data.shape == (1,)
        assert np.abs(np.asarray(model(_ids())) - ref).max() / np.abs(ref).max() <= 1e-5


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
def test_engine_greedy_tokens_on_four_devices(tmp_path_factory):
    """Sinks sharded by head in the paged attention's shard_map, the down bias added once per psum."""
    path, hf = saved(tmp_path_factory)
    llm = LLM(str(path), skip_tokenizer_init=True, tensor_parallel_size=4, max_num_seqs=2,
              max_num_batched_tokens=16, block_size=8, max_model_len=64, enforce_eager=True)
    prompts = [list(range(3, 30)), list(range(40, 46))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
    for p, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(hf, p, GREEDY.max_tokens)


@pytest.mark.parametrize("missing", ["model.layers.2.self_attn.sinks", "model.layers.1.mlp.router.bias",
                                     "model.layers.3.mlp.experts.down_proj_bias"])
def test_strict_loading_names_the_key(missing, tmp_path_factory, tmp_path):
    path, _ = saved(tmp_path_factory)
    tensors = load_file(path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    save_file({k: v for k, v in tensors.items() if k != missing}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=missing.replace(".", r"\.")):
        jaxllm.load_model(tmp_path)
    extra = missing.replace("layers.", "layers.9")
    save_file({**tensors, extra: tensors[missing]}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=f"unexpected key '{extra}'"):
        jaxllm.load_model(tmp_path)


def _hf_config(**changes):
    from gpt_oss_cases import GPT_OSS_TINY

    return {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", **GPT_OSS_TINY, **changes}


def test_config_defaults_and_layer_types():
    hf = _hf_config()
    del hf["sliding_window"]
    cfg = ModelConfig.from_hf(hf)  # GptOssConfig's defaults: window 128, even layers slide, q/k/v/o biases
    assert cfg.sliding_windows == (128, None, 128, None)
    assert (cfg.attention_bias, cfg.attention_out_bias, cfg.moe_activation) == (True, True, "clamped_swiglu")
    types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert ModelConfig.from_hf(_hf_config(layer_types=types)).sliding_windows == (None, WINDOW, WINDOW, None)
    cfg = ModelConfig.from_hf({k: v for k, v in _hf_config().items() if k != "rope_parameters"})
    assert (cfg.rope.rope_type, cfg.rope.theta) == ("yarn", 150000.0)  # gpt-oss's yarn (factor 32 over 4096)


@pytest.mark.parametrize("changes, message", [
    ({"layer_types": ["sliding_attention"] * 3}, "layer_types="),
    ({"layer_types": ["chunked_attention"] * 4}, "layer_types="),
    ({"sliding_window": 0}, "sliding_window=0"),
    ({"num_experts_per_tok": 5}, "num_experts_per_tok=5"),
    ({"swiglu_limit": -1.0}, "swiglu_limit=-1.0"),
])
def test_config_errors_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(_hf_config(**changes))


def test_mxfp4_config_of_another_architecture_is_clear():
    hf = {"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "mxfp4"}}
    with pytest.raises(ValueError, match="mxfp4"):
        ModelConfig.from_hf(hf)
    assert ModelConfig.from_hf(_hf_config(quantization_config={"quant_method": "mxfp4"})).mxfp4_experts


def test_hf_config_file_round_trip(tmp_path_factory):
    path, hf = saved(tmp_path_factory)
    on_disk = json.loads((path / "config.json").read_text())
    assert ModelConfig.from_hf(on_disk) == ModelConfig.from_hf(hf.config)


def test_bf16_checkpoint_as_transformers_saves_it(tmp_path):
    """A bf16 save: read in float32 it matches transformers on the same (bf16-rounded) weights; read as saved
    it runs in bf16 with float32 sinks. (bf16 against fp32 is no parity measure for this model: its large
    expert weights put routing and the clamps on knife edges.)"""
    hf16 = save_gpt_oss(tmp_path).to(torch.bfloat16)
    hf16.save_pretrained(tmp_path)
    with torch.no_grad():
        ref = hf16.float()(torch.tensor(_ids(), dtype=torch.long)).logits.numpy()
    ours = np.asarray(jaxllm.load_model(tmp_path, dtype="float32")(_ids()))
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4
    model = jaxllm.load_model(tmp_path)
    assert model.config.dtype == "bfloat16" and model.layers[0].self_attn.sinks[...].dtype == jnp.float32
    assert model.layers[0].mlp.gate_up_bias[...].dtype == jnp.bfloat16
    assert np.isfinite(np.asarray(model(_ids()))).all()


def test_load_time_int8_quantizes_the_biased_experts(tmp_path_factory):
    """quantization="int8": the experts' per-channel scales reach the biased matmuls (compared block by block:
    the model's logits are too sensitive to any rounding of its large experts to compare end to end)."""
    from jaxllm.models.moe import QuantizedExperts

    path, _ = saved(tmp_path_factory)
    quantized, plain = jaxllm.load_model(path, quantization="int8"), jaxllm.load_model(path)
    assert isinstance(quantized.layers[0].mlp.gate_up, QuantizedExperts)
    x = jnp.asarray(np.random.RandomState(3).randn(16, 64), jnp.float32)
    for layer in (0, 3):
        ref = np.asarray(plain.layers[layer].mlp(x))
        assert np.abs(np.asarray(quantized.layers[layer].mlp(x)) - ref).max() / np.abs(ref).max() < 0.02


def test_released_config_json():
    """gpt-oss-20b's config.json as published (transformers 4.x ``rope_scaling`` with a top-level ``rope_theta``,
    explicit ``layer_types``, MXFP4 quantization_config, no ``swiglu_alpha``)."""
    hf = {"architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
          "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880,
          "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 2880,
          "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072,
          "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24,
          "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
          "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                             "model.embed_tokens", "lm_head"],
                                  "quant_method": "mxfp4"},
          "rms_norm_eps": 1e-05, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                                                  "original_max_position_embeddings": 4096, "rope_type": "yarn",
                                                  "truncate": False},
          "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
          "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 201088}
    cfg = ModelConfig.from_hf(hf)
    assert (cfg.mxfp4_experts, cfg.quantization, cfg.dtype) == (True, None, "bfloat16")
    assert cfg.sliding_windows == (128, None) * 12 and (cfg.num_experts, cfg.num_experts_per_tok) == (32, 4)
    assert (cfg.rope.rope_type, cfg.rope.theta, cfg.rope.get("factor"), cfg.rope.get("truncate")) == (
        "yarn", 150000.0, 32.0, False)
    assert (cfg.swiglu_alpha, cfg.swiglu_limit, cfg.eos_token_ids) == (1.702, 7.0, (200002,))
    other = ModelConfig.from_hf({**hf, "rope_scaling": {**hf["rope_scaling"], "factor": 8.0}})
    assert other.rope.get("factor") == 8.0  # the checkpoint's rope, not GptOssConfig's default


def test_pallas_grouped_matmul_in_the_biased_block(tmp_path_factory):
    """The biased experts through the Pallas grouped matmul (interpret mode off the GPU: float32 out, no fused
    SwiGLU) equal ragged_dot's."""
    path, _ = saved(tmp_path_factory)
    x = jnp.asarray(np.random.RandomState(4).randn(2, 9, 64), jnp.float32)
    outs = [np.asarray(jaxllm.load_model(path, moe_matmul_impl=impl).layers[1].mlp(x))
            for impl in ("ragged_dot", "pallas_triton")]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
