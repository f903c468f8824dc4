"""Mixtral, Qwen3-MoE, Qwen2-MoE and OLMoE: fp32 logits within 1e-4 of transformers and greedy LLM.generate identical, on tiny
random checkpoints with non-uniform routing (tests/hf_models.py draws the routers with std 1); config parsing
(sparse layers, norm_topk_prob) and strict loading of the experts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import hf_greedy, save_tiny_model, session_checkpoint
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.config import ModelConfig
from jaxllm.models.moe import SparseMoeBlock
from jaxllm.weights.loader import WeightLoadError

EXPERTS = {"num_local_experts": 8, "num_experts_per_tok": 2}
QWEN2_EXPERTS = {"num_experts": 8, "num_experts_per_tok": 2}  # (Qwen2MoeConfig has no num_local_experts alias)
CASES = {
    "mixtral": ("MixtralForCausalLM", dict(EXPERTS, intermediate_size=32)),
    "mixtral-top3-window": ("MixtralForCausalLM", dict(EXPERTS, num_experts_per_tok=3, intermediate_size=32,
                                                       sliding_window=7)),
    # layer 0 dense (mlp_only_layers), layer 1 sparse; top-k not renormalized
    "qwen3moe-mixed": ("Qwen3MoeForCausalLM", dict(EXPERTS, moe_intermediate_size=32, head_dim=16,
                                                   mlp_only_layers=[0])),
    "qwen3moe-norm-topk": ("Qwen3MoeForCausalLM", dict(EXPERTS, num_experts_per_tok=4, moe_intermediate_size=16,
                                                       norm_topk_prob=True, num_hidden_layers=3)),
    # sigmoid-gated shared expert in the sparse layers 0 and 2; layer 1 dense (mlp_only_layers)
    "qwen2moe-shared": ("Qwen2MoeForCausalLM", {**QWEN2_EXPERTS, "moe_intermediate_size": 16,
                                                    "num_hidden_layers": 3, "shared_expert_intermediate_size": 48,
                                                    "mlp_only_layers": [1], "norm_topk_prob": True}),
    # q/k norms over the whole projection, q/k/v clamped, top-k not renormalized
    "olmoe-clip": ("OlmoeForCausalLM", dict(EXPERTS, intermediate_size=32, clip_qkv=0.5, pad_token_id=0,
                                            eos_token_id=1, bos_token_id=2)),
}


def saved_checkpoint(name, tmp_path_factory):
    """(path, HF model) of CASES[name], built once per test session."""
    arch, overrides = CASES[name]
    return session_checkpoint(tmp_path_factory, save_tiny_model, name, arch, **overrides)


@pytest.fixture(params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    return saved_checkpoint(request.param, tmp_path_factory)


def test_logits_match_transformers(checkpoint):
    path, hf = checkpoint
    model = jaxllm.load_model(path)
    assert any(isinstance(layer.mlp, SparseMoeBlock) for layer in model.layers)
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 24)).astype(np.int32)
    with torch.no_grad():
        ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    ours = np.asarray(model(ids))
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4


def test_pallas_kernel_in_the_layer(tmp_path_factory):
    """The MoE layer through the Pallas grouped matmul (interpret mode off the GPU) equals ragged_dot's."""
    import jax.numpy as jnp

    path, _ = saved_checkpoint("qwen3moe-norm-topk", tmp_path_factory)
    x = jnp.asarray(np.random.RandomState(4).randn(2, 9, 64), jnp.float32)
    outs = {}
    for impl in ("ragged_dot", "pallas_triton"):  # LLM / load_model keyword moe_matmul_impl
        block = jaxllm.load_model(path, moe_matmul_impl=impl).layers[0].mlp
        assert block.impl == impl
        outs[impl] = np.asarray(block(x))
    np.testing.assert_allclose(outs["pallas_triton"], outs["ragged_dot"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="moe_matmul_impl='cutlass'"):
        jaxllm.load_model(path, moe_matmul_impl="cutlass")


# one per architecture: generate compiles (Qwen2-MoE and OLMoE: tests/llm/test_family_greedy.py)
@pytest.mark.parametrize("name", ["mixtral", "qwen3moe-mixed"])
def test_greedy_generate_matches_transformers(name, tmp_path_factory):
    path, hf = saved_checkpoint(name, tmp_path_factory)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, enforce_eager=True)
    rng = np.random.RandomState(2)
    prompts = [[int(t) for t in rng.randint(1, 256, n)] for n in (5, 19, 11, 3)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for p, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(hf, p, 8)


def test_routing_is_not_uniform(checkpoint):
    """The check above means something only if tokens pick different experts."""
    _path, hf = checkpoint
    layer = next(m for m in hf.model.layers if hasattr(m.mlp, "experts"))
    with torch.no_grad():
        x = hf.model.embed_tokens(torch.arange(64))
        _, _, experts = layer.mlp.gate(layer.post_attention_layernorm(x))
    assert len(set(experts.flatten().tolist())) == getattr(hf.config, "num_local_experts", hf.config.num_experts)


def test_config_parsing():
    base = {"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 6, "num_attention_heads": 4, "num_experts": 16, "num_experts_per_tok": 4,
                "moe_intermediate_size": 8, "decoder_sparse_step": 2, "mlp_only_layers": [3], "norm_topk_prob": True}
    cfg = ModelConfig.from_hf(base)
    assert cfg.moe_layers == (False, True, False, False, False, True)
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.norm_topk_prob, cfg.qk_norm) == (16, 4, True, "head")
    # active parameters: 4 of 16 experts in each of the 2 sparse layers
    saved = 2 * 12 * 3 * 32 * 8
    assert cfg.num_params() - cfg.num_params(experts_per_layer=4) == saved
    mixtral = ModelConfig.from_hf(dict(base, architectures=["MixtralForCausalLM"], num_local_experts=8))
    assert mixtral.moe_layers == (True,) * 6 and mixtral.norm_topk_prob and mixtral.moe_intermediate_size == 64
    with pytest.raises(ValueError, match="num_experts_per_tok=20"):
        ModelConfig.from_hf(dict(base, num_experts_per_tok=20))
    with pytest.raises(ValueError, match="enable_expert_parallel=True but LlamaForCausalLM has no experts") as err:
        ModelConfig.from_hf(dict(base, architectures=["LlamaForCausalLM"])).with_expert_parallel(True)
    assert all(arch in str(err.value) for arch in ("DeepseekV3ForCausalLM", "GptOssForCausalLM", "DbrxForCausalLM"))


def test_missing_and_unknown_expert_keys_are_named(tmp_path):
    save_tiny_model(tmp_path, "MixtralForCausalLM", **CASES["mixtral"][1])
    tensors = load_file(tmp_path / "model.safetensors")
    key = "model.layers.1.block_sparse_moe.experts.7.w3.weight"
    save_file({k: v for k, v in tensors.items() if k != key}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=key.replace(".", r"\.")):
        jaxllm.load_model(tmp_path)
    extra = "model.layers.1.block_sparse_moe.experts.8.w1.weight"
    save_file({**tensors, extra: tensors[key]}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=f"unexpected key '{extra}'"):
        jaxllm.load_model(tmp_path)


def test_shared_expert_keys_are_strict(tmp_path_factory, tmp_path):
    """Qwen2-MoE's shared expert and its gate load strictly (a missing one is named); the parsed config has the
    shared expert's ffn dim and counts its parameters."""
    import shutil

    path, _ = saved_checkpoint("qwen2moe-shared", tmp_path_factory)
    cfg = ModelConfig.from_pretrained(path)
    assert cfg.shared_expert_intermediate_size == 48 and cfg.moe_layers == (True, False, True)
    assert cfg.num_params() - cfg.num_params(experts_per_layer=2) == 2 * 6 * 3 * 64 * 16
    tensors = load_file(path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    for key in ("model.layers.2.mlp.shared_expert_gate.weight", "model.layers.0.mlp.shared_expert.up_proj.weight"):
        save_file({k: v for k, v in tensors.items() if k != key}, tmp_path / "model.safetensors")
        with pytest.raises(WeightLoadError, match=key.replace(".", r"\.")):
            jaxllm.load_model(tmp_path)


def test_olmoe_and_qwen2moe_config_fields():
    base = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2}
    olmoe = ModelConfig.from_hf({**base, "architectures": ["OlmoeForCausalLM"], "clip_qkv": 8})
    assert (olmoe.qk_norm, olmoe.clip_qkv, olmoe.norm_topk_prob, olmoe.moe_intermediate_size) == ("full", 8.0,
                                                                                                 False, 64)
    assert olmoe.moe_layers == (True,) * 4 and olmoe.rms_norm_eps == 1e-5
    qwen2moe = ModelConfig.from_hf({**base, "architectures": ["Qwen2MoeForCausalLM"], "moe_intermediate_size": 8,
                                    "num_local_experts": 4, "decoder_sparse_step": 2, "qkv_bias": False})
    # num_local_experts is no Qwen2-MoE field (transformers reads num_experts); no biases when qkv_bias is false
    assert qwen2moe.num_experts == 8 and qwen2moe.moe_layers == (False, True, False, True)
    assert (qwen2moe.attention_bias, qwen2moe.shared_expert_intermediate_size) == (False, 5632)
    with pytest.raises(ValueError, match="clip_qkv=-1"):
        ModelConfig.from_hf({**base, "architectures": ["OlmoeForCausalLM"], "clip_qkv": -1})


@pytest.mark.parametrize("method", ["fp8", "int8"])
def test_load_time_quantized_experts(tmp_path, method):
    """quantization="fp8"/"int8": each expert quantized per output channel; the layer equals the same layer run on
    the dequantized weights, and the whole model stays close to the unquantized one."""
    import jax.numpy as jnp

    from jaxllm.models.moe import QuantizedExperts, expert_ffn, route
    from jaxllm.models.quant import dequantize

    save_tiny_model(tmp_path, "Qwen3MoeForCausalLM", **CASES["qwen3moe-mixed"][1])
    model = jaxllm.load_model(tmp_path, quantization=method)
    block = model.layers[1].mlp
    assert isinstance(block.gate_up, QuantizedExperts) and block.gate_up.scale[...].shape == (8, 2, 32)
    x = jnp.asarray(np.random.RandomState(3).randn(10, 64), jnp.float32)
    weights, experts = route(x, block.router[...], block.top_k, block.norm_topk_prob)
    deq = [(dequantize(w.qweight[...], w.scale[...][:, None]), None) for w in (block.gate_up, block.down)]
    quantized = [(w.qweight[...], w.scale[...]) for w in (block.gate_up, block.down)]
    np.testing.assert_allclose(expert_ffn(x, weights, experts, *quantized, 0),
                               expert_ffn(x, weights, experts, *deq, 0), rtol=1e-5, atol=1e-5)
    ids = np.arange(24, dtype=np.int32)[None] * 5 % 256
    ref = np.asarray(jaxllm.load_model(tmp_path)(ids))
    assert np.abs(np.asarray(model(ids)) - ref).max() / np.abs(ref).max() < 0.1


def _fp8_moe_checkpoint(src, qdir, ddir):
    """From the float checkpoint in ``src``: an fp8 one in ``qdir`` (every linear weight and expert float8_e4m3fn
    with a per-tensor ``weight_scale``) and its dequantized float32 twin in ``ddir``."""
    import json
    import shutil

    import ml_dtypes

    tensors = load_file(src / "model.safetensors")
    quantized, dequantized = {}, {}
    for name, w in tensors.items():
        if "proj" in name or ".experts." in name:
            scale = np.array(np.abs(w).max() / 448.0, np.float32)
            q = (w / scale).astype(ml_dtypes.float8_e4m3fn)
            quantized[name], quantized[name + "_scale"] = q, scale
            dequantized[name] = q.astype(np.float32) * scale
        else:
            quantized[name] = dequantized[name] = w
    cfg = json.loads((src / "config.json").read_text())
    for path, t, extra in ((qdir, quantized, {"quant_method": "fp8", "activation_scheme": "dynamic"}),
                           (ddir, dequantized, None)):
        path.mkdir()
        save_file(t, path / "model.safetensors")
        (path / "config.json").write_text(json.dumps({**cfg, "quantization_config": extra} if extra else cfg))
    shutil.copy(src / "config.json", ddir / "config.json")


def test_fp8_checkpoint_experts(tmp_path):
    """An fp8 checkpoint's experts load as QuantizedExperts and compute what the dequantized weights compute."""
    from jaxllm.models.moe import QuantizedExperts

    src = tmp_path / "src"
    save_tiny_model(src, "MixtralForCausalLM", **CASES["mixtral"][1])
    _fp8_moe_checkpoint(src, tmp_path / "fp8", tmp_path / "deq")
    model = jaxllm.load_model(tmp_path / "fp8")
    assert isinstance(model.layers[0].mlp.down, QuantizedExperts)
    assert model.layers[0].mlp.down.scale[...].shape == (8, 64)
    ids = np.arange(24, dtype=np.int32)[None] * 7 % 256
    ref = np.asarray(jaxllm.load_model(tmp_path / "deq")(ids))
    assert np.abs(np.asarray(model(ids)) - ref).max() / np.abs(ref).max() <= 1e-5


def test_int4_moe_checkpoint_is_clear(tmp_path):
    import json

    save_tiny_model(tmp_path, "MixtralForCausalLM", **CASES["mixtral"][1])
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                                  "version": "gemm"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'awq' checkpoints of MoE models are not supported yet"):
        jaxllm.load_model(tmp_path)


def test_speculative_decoding_matches_transformers(tmp_path_factory):
    """n-gram speculation on an MoE model: the drafts are routed like any other token, so greedy outputs stay
    transformers' tokens, with drafts proposed on repeating prompts."""
    path, hf = saved_checkpoint("mixtral", tmp_path_factory)
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1,
            "disable_by_batch_size": 64}  # every step speculates (the automatic rule would not on a tiny CPU model)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, enforce_eager=True,
              speculative_config=spec)
    prompts = [[7, 8, 9] * 4, [20, 21] * 5, [40, 41, 42, 43] * 2]
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for p, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(hf, p, 10)
    assert llm.llm_engine.stats.spec_decode_num_draft_tokens > 0
