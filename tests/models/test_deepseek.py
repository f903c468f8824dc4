"""DeepSeek-V2 / V3 (multi-head latent attention + DeepSeek MoE) against transformers on tiny random checkpoints:
fp32 logits within 1e-4 relative (V2 with and without q_lora_rank, greedy and group-limited routing; V3 with
sigmoid + correction-bias group routing, YaRN mscale, both rope layouts), the router's choices, greedy
LLM.generate under chunked prefill and prefix caching, strict loading (MTP layers skipped) and config errors."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from deepseek_models import V2, V3, YARN, save_deepseek
from hf_models import hf_greedy, hf_logits, relative_error
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.config import ModelConfig
from jaxllm.config_deepseek import mla_softmax_scale
from jaxllm.model_size import linear_param_counts
from jaxllm.models.deepseek_moe import DeepseekMoeBlock, deepseek_route
from jaxllm.weights.loader import WeightLoadError

CASES = {
    "v2-qlora-greedy": (V2, {}),
    "v2-qproj-group-limited": (V2, {"q_lora_rank": None, "topk_method": "group_limited_greedy", "v_head_dim": 24}),
    "v3-yarn": (V3, {"rope_parameters": YARN, "n_shared_experts": 2}),
    "v3-rotate-half": (V3, {"rope_interleave": False, "first_k_dense_replace": 0, "num_experts_per_tok": 3}),
}


_SAVED: dict = {}


def saved(name, tmp_path_factory):
    if name not in _SAVED:
        arch, overrides = CASES[name]
        path = tmp_path_factory.mktemp(name)
        _SAVED[name] = path, save_deepseek(path, arch, **overrides)
    return _SAVED[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(name, tmp_path_factory):
    path, hf = saved(name, tmp_path_factory)
    model = jaxllm.load_model(path)
    assert sum(isinstance(layer.mlp, DeepseekMoeBlock) for layer in model.layers) == 3 - hf.config.first_k_dense_replace
    ids = np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_router_matches_transformers(name, tmp_path_factory):
    """The chosen experts and their weights equal transformers' router, and the groups really restrict."""
    path, hf = saved(name, tmp_path_factory)
    cfg = ModelConfig.from_pretrained(path)
    gate = hf.model.layers[2].mlp.gate
    x = torch.randn(64, 64)
    with torch.no_grad():
        _, ref_w, ref_e = gate(x)
    bias = getattr(gate, "e_score_correction_bias", None)
    weights, experts = deepseek_route(x.numpy(), gate.weight.detach().numpy().T,
                                      None if bias is None else bias.numpy(), cfg)
    order = np.argsort(np.asarray(experts), axis=1)
    ref_order = np.argsort(ref_e.numpy(), axis=1)
    np.testing.assert_array_equal(np.take_along_axis(np.asarray(experts), order, 1),
                                  np.take_along_axis(ref_e.numpy(), ref_order, 1))
    np.testing.assert_allclose(np.take_along_axis(np.asarray(weights), order, 1),
                               np.take_along_axis(ref_w.numpy(), ref_order, 1), rtol=1e-5, atol=1e-6)
    assert len(set(np.asarray(experts).ravel().tolist())) == 8  # every expert is used by some token
    if cfg.moe_topk_method != "greedy":  # each token's experts lie in at most topk_group of the n_group groups
        groups = np.asarray(experts) // (8 // cfg.moe_n_group)
        assert max(len(set(row)) for row in groups.tolist()) <= cfg.moe_topk_group


@pytest.mark.parametrize("name", ["v2-qproj-group-limited", "v3-yarn"])
def test_latent_cache_logits_match_transformers(name, tmp_path_factory):
    """attention_backend="chunked": the cache holds the compressed latent (one head of kv_lora_rank +
    qk_rope_head_dim), kv_b absorbed into q and the output; the same logits."""
    path, hf = saved(name, tmp_path_factory)
    model = jaxllm.load_model(path, attention_backend="chunked")
    cfg = model.config
    assert cfg.mla_latent_cache and (cfg.num_kv_heads, cfg.head_dim) == (1, 32 + 8)
    assert not jaxllm.load_model(path, attention_backend="pallas_triton").config.mla_latent_cache
    ids = np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)
    assert relative_error(np.asarray(model(ids)), hf_logits(hf, ids)) <= 1e-4


@pytest.mark.parametrize("name,backend", [("v2-qlora-greedy", None), ("v3-yarn", "chunked")])
def test_greedy_generate_chunked_prefill_and_prefix_cache(name, backend, tmp_path_factory):
    """Token-identical to transformers' greedy decoding with prompts split into chunks of at most 8 tokens and
    prompts that share a cached prefix, over the per-head K / V cache and the latent cache ("chunked")."""
    path, hf = saved(name, tmp_path_factory)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=8, block_size=8,
              enable_prefix_caching=True, enforce_eager=True, attention_backend=backend)
    assert llm.llm_engine.runner.kv_caches[0].shape[-2:] == ((1, 40) if backend else (4, 24))
    rng = np.random.RandomState(2)
    shared = [int(t) for t in rng.randint(1, 256, 17)]
    prompts = [shared + [5, 6], [int(t) for t in rng.randint(1, 256, 19)], shared + [7], [3, 4]]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    first = llm.generate([{"prompt_token_ids": p} for p in prompts[:2]], params, use_tqdm=False)
    later = llm.generate([{"prompt_token_ids": p} for p in prompts[2:]], params, use_tqdm=False)
    assert later[0].num_cached_tokens >= 16  # the shared prefix's full blocks came from the cache
    for p, out in zip(prompts, first + later):
        assert out.outputs[0].token_ids == hf_greedy(hf, p, 6)


def test_param_count_matches_transformers(tmp_path_factory):
    for name in ("v2-qproj-group-limited", "v3-yarn"):
        path, hf = saved(name, tmp_path_factory)
        cfg = ModelConfig.from_pretrained(path)
        assert cfg.num_params() == sum(p.numel() for p in hf.parameters())
        named = dict(hf.named_parameters())
        experts = sum(p.numel() for n, p in named.items() if ".experts." in n)  # (HF: fused 3-D expert weights)
        linear = experts + sum(p.numel() for n, p in named.items() if n.endswith(("proj.weight", "proj_with_mqa.weight")))
        assert linear_param_counts(cfg) == (linear, experts)
        assert (cfg.head_dim, cfg.num_kv_heads, cfg.rotary_dim) == (max(16 + 8, cfg.v_head_dim), 4, 8)


def test_mtp_layers_skipped_other_keys_strict(tmp_path_factory, tmp_path):
    """V3's MTP layer (model.layers.{num_hidden_layers}.*) is not loaded; a missing router bias or latent
    projection, and keys of a layer beyond the MTP ones, are errors naming the key."""
    src, hf = saved("v3-yarn", tmp_path_factory)
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    assert config["num_nextn_predict_layers"] == 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    mtp = {"model.layers.3.eh_proj.weight": np.zeros((64, 128), np.float32),
           "model.layers.3.self_attn.kv_a_proj_with_mqa.weight": tensors["model.layers.2.self_attn.kv_a_proj_with_mqa.weight"]}
    save_file({**tensors, **mtp}, tmp_path / "model.safetensors")
    ids = np.arange(10, dtype=np.int32)[None]
    assert relative_error(np.asarray(jaxllm.load_model(tmp_path)(ids)), hf_logits(hf, ids)) <= 1e-4
    beyond = "model.layers.4.eh_proj.weight"
    save_file({**tensors, beyond: mtp["model.layers.3.eh_proj.weight"]}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=f"unexpected key '{beyond}'"):
        jaxllm.load_model(tmp_path)
    for key in ("model.layers.2.mlp.gate.e_score_correction_bias", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"):
        save_file({k: v for k, v in tensors.items() if k != key}, tmp_path / "model.safetensors")
        with pytest.raises(WeightLoadError, match=key.replace(".", r"\.")):
            jaxllm.load_model(tmp_path)


def test_config_errors(tmp_path_factory):
    path, _ = saved("v3-yarn", tmp_path_factory)
    base = json.loads((path / "config.json").read_text())
    fp8 = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    assert ModelConfig.from_hf({**base, "quantization_config": fp8}).quant_block_size == (128, 128)
    with pytest.raises(ValueError, match=r"weight_block_size=\[128\] \(two positive integers\)"):
        ModelConfig.from_hf({**base, "quantization_config": {**fp8, "weight_block_size": [128]}})
    with pytest.raises(ValueError, match="topk_method='bogus'"):
        ModelConfig.from_hf({**base, "architectures": [V2], "topk_method": "bogus"})
    with pytest.raises(ValueError, match="n_group=3 must divide n_routed_experts=8"):
        ModelConfig.from_hf({**base, "n_group": 3})
    with pytest.raises(ValueError, match="attention_bias=True"):
        ModelConfig.from_hf({**base, "attention_bias": True})
    per_tensor = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    with pytest.raises(ValueError, match="'fp8' checkpoints are not supported for DeepSeek"):
        jaxllm.load_model(path, hf_overrides={"quantization_config": per_tensor})
    cfg = ModelConfig.from_hf({**base, "moe_layer_freq": 2, "first_k_dense_replace": 0})
    assert cfg.moe_layers == (True, False, True)


def test_pallas_kernel_takes_mla_head_dim():
    """The real models' MLA cache rows (Dh = 128 + 64 = 192, one kv head per q head, V zero beyond its 128 dims)
    through the Pallas kernel in interpret mode (tiles padded to 256): equal to the naive oracle, V's padded
    output columns zero."""
    import jax.numpy as jnp
    from jaxllm.ops.paged_attention.pallas_attention import ragged_paged_attention_pallas
    from jaxllm.ops.paged_attention.pallas_triton import TileConfig

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ops"))
    from batches import make_batch, naive_attention

    b = make_batch(np.random.default_rng(0), [1, 11, 1], [30, 17, 9], num_q_heads=2, num_kv_heads=2, head_dim=192,
                   block_size=8)
    b.kv_cache[1, ..., 128:] = np.where(np.isnan(b.kv_cache[1, ..., 128:]), np.nan, 0.0)
    out = ragged_paged_attention_pallas(*map(jnp.asarray, b.args()), sm_scale=192 ** -0.5, interpret=True,
                                        decode_cfg=TileConfig(block_q=1, block_n=8, num_splits=2),
                                        prefill_cfg=TileConfig(block_q=4, block_n=8))
    out = np.asarray(out, np.float64)[:b.meta.num_real_tokens]
    assert np.abs(out - naive_attention(b, 192 ** -0.5)).max() < 1e-4
    assert not out[..., 128:].any()


@pytest.mark.gpu
def test_gpu_kernels_run_real_mla_dims(tmp_path):
    """On the GPU the Pallas paged kernels serve the real MLA head dims (Dn 128 + Dr 64, Dv 128) over per-head
    K / V: greedy tokens equal the chunked jnp attention's over the 576-wide latent cache (float32 weights)."""
    save_deepseek(tmp_path, V3, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, num_attention_heads=2,
                  rope_parameters=YARN)
    prompts = [{"prompt_token_ids": [int(t) for t in np.random.RandomState(n).randint(1, 256, n)]} for n in (40, 5)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    tokens = {}
    for backend in ("pallas_triton", "chunked"):
        llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=64,
                  attention_backend=backend, gpu_memory_utilization=0.3)
        tokens[backend] = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert tokens["pallas_triton"] == tokens["chunked"]


# the released configs (their attention / MoE fields), without the files' auto_map / quantization_config
V2_LITE_CONFIG = {"architectures": [V2], "first_k_dense_replace": 1, "hidden_size": 2048, "intermediate_size": 10944,
                  "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
                  "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
                  "n_shared_experts": 2, "norm_topk_prob": False, "num_attention_heads": 16, "num_experts_per_tok": 6,
                  "num_hidden_layers": 27, "num_key_value_heads": 16, "q_lora_rank": None, "qk_nope_head_dim": 128,
                  "qk_rope_head_dim": 64, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
                  "mscale": 0.707, "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                  "type": "yarn"}, "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
                  "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16", "v_head_dim": 128,
                  "vocab_size": 102400}
V3_CONFIG = {**V2_LITE_CONFIG, "architectures": [V3], "first_k_dense_replace": 3, "hidden_size": 7168,
             "intermediate_size": 18432, "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "n_group": 8,
             "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128,
             "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
             "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "rope_scaling": {
                 "beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                 "original_max_position_embeddings": 4096, "type": "yarn"}, "routed_scaling_factor": 2.5,
             "scoring_func": "sigmoid", "topk_group": 4, "topk_method": "noaux_tc", "vocab_size": 129280}


def test_released_configs():
    """DeepSeek-V2-Lite: 15.7B parameters (2.7B active with embeddings); DeepSeek-V3: 671B (37.6B active); the
    cache rows are 192 wide, one per head; the softmax scale carries YaRN's mscale squared."""
    lite, v3 = ModelConfig.from_hf(V2_LITE_CONFIG), ModelConfig.from_hf(V3_CONFIG)
    assert round(lite.num_params() / 1e9, 1) == 15.7 and round(v3.num_params() / 1e9) == 671
    assert round(v3.num_params(experts_per_layer=8) / 1e9, 1) == 37.6
    assert (v3.head_dim, v3.num_kv_heads, v3.rotary_dim, sum(v3.moe_layers), v3.num_nextn_predict_layers) == \
        (192, 128, 64, 58, 1)
    assert (lite.q_lora_rank, lite.moe_topk_method, lite.shared_expert_intermediate_size) == (0, "greedy", 2816)
    mscale = 0.1 * 0.707 * np.log(40) + 1
    assert lite.dtype == "bfloat16" and np.isclose(mla_softmax_scale(lite), 192 ** -0.5 * mscale ** 2)


def test_quantized_at_load(tmp_path_factory):
    """quantization="int8" (fp8 alike: test_block_fp8_checkpoint): the MLA projections (kv_b aside), the dense and
    shared MLPs and the experts quantized per output channel; logits near the float model's, equal over both cache
    layouts."""
    method = "int8"
    from jaxllm.models.quant import QuantizedWeight

    path, hf = saved("v3-yarn", tmp_path_factory)
    ids = np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)
    ref, outs = hf_logits(hf, ids), []
    for backend in (None, "chunked"):
        model = jaxllm.load_model(path, quantization=method, attention_backend=backend)
        attn = model.layers[0].self_attn
        weights = (attn.q_a_proj, attn.q_b_proj, attn.o_proj, attn.kv_a_proj_with_mqa,
                   model.layers[1].mlp.shared_experts.down)
        assert all(isinstance(w, QuantizedWeight) for w in weights)
        assert not isinstance(attn.kv_b_proj, QuantizedWeight)
        outs.append(np.asarray(model(ids)))
        assert 0 < relative_error(outs[-1], ref) <= 0.03
    assert relative_error(outs[1], outs[0]) <= 1e-5


def _block_quantize(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, K] -> (float8_e4m3fn [N, K], scale_inv [ceil(N / B), ceil(K / B)]), DeepSeek-V3's format."""
    import ml_dtypes

    n, k = w.shape
    pad = np.zeros((-(-n // block) * block, -(-k // block) * block), np.float32)
    pad[:n, :k] = w
    blocks = pad.reshape(pad.shape[0] // block, block, pad.shape[1] // block, block)
    scale = np.abs(blocks).max(axis=(1, 3)) / 448.0
    full = np.repeat(np.repeat(scale, block, 0), block, 1)[:n, :k]
    return (w / full).astype(ml_dtypes.float8_e4m3fn), scale.astype(np.float32)


def test_block_fp8_checkpoint(tmp_path_factory, tmp_path):
    """A block-wise fp8 checkpoint (weight_block_size, weight_scale_inv) loads as its dequantized weights
    quantized at load with quantization="fp8": the same logits; a weight without its scale is named."""
    src, _ = saved("v3-yarn", tmp_path_factory)
    tensors = load_file(src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    fp8_dir, deq_dir = tmp_path / "fp8", tmp_path / "dequantized"
    quantized, dequantized = {}, dict(tensors)
    for name, w in tensors.items():
        if name.endswith(("proj.weight", "mqa.weight")):  # linear layers, experts included
            q, scale = _block_quantize(w, 16)
            quantized[name], quantized[name[:-len("weight")] + "weight_scale_inv"] = q, scale
            full = np.repeat(np.repeat(scale, 16, 0), 16, 1)[:w.shape[0], :w.shape[1]]
            dequantized[name] = q.astype(np.float32) * full
        else:
            quantized[name] = w
    block = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [16, 16]}
    for path, weights, extra in ((fp8_dir, quantized, {"quantization_config": block}), (deq_dir, dequantized, {})):
        path.mkdir()
        (path / "config.json").write_text(json.dumps({**config, **extra}))
        save_file(weights, path / "model.safetensors")
    ids = np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)
    model = jaxllm.load_model(fp8_dir)
    assert model.config.quant_block_size == (16, 16) and model.config.quantization == "fp8"
    ref = np.asarray(jaxllm.load_model(deq_dir, quantization="fp8")(ids))
    np.testing.assert_allclose(np.asarray(model(ids)), ref, rtol=1e-6, atol=1e-6)
    key = "model.layers.2.mlp.experts.5.up_proj.weight_scale_inv"
    save_file({k: v for k, v in quantized.items() if k != key}, fp8_dir / "model.safetensors")
    with pytest.raises(ValueError, match="experts.5.up_proj.weight in .* has no .*up_proj.weight_scale_inv"):
        jaxllm.load_model(fp8_dir)
