"""GraniteMoe, GraniteMoeShared, PhiMoE, DBRX and Ernie 4.5 MoE against transformers on tiny random checkpoints
(routers, norms and biases perturbed: tests/models/moe_families_cases.py): fp32 logits within 1e-4, greedy
LLM.generate token-identical with chunked prefill and prefix caching, tensor parallelism on 4 CPU devices
(experts' ffn dim split and enable_expert_parallel), strict loading of the fused expert tensors, and clear errors
for the options not implemented."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from hf_models import check_greedy_prefix_cache
from moe_families_cases import CASES, save_moe_model
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.config import ModelConfig
from jaxllm.models.moe import SparseMoeBlock
from jaxllm.weights.loader import WeightLoadError

_SAVED: dict = {}


def saved(name, tmp_path_factory):
    """(path, HF model) of CASES[name], built once per test session."""
    if name not in _SAVED:
        path = tmp_path_factory.mktemp(name)
        _SAVED[name] = path, save_moe_model(path, name)
    return _SAVED[name]


def _ids():
    return np.random.RandomState(1).randint(0, 256, (2, 24)).astype(np.int32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_transformers(name, tmp_path_factory):
    path, hf = saved(name, tmp_path_factory)
    model = jaxllm.load_model(path)
    blocks = [layer.mlp for layer in model.layers if isinstance(layer.mlp, SparseMoeBlock)]
    assert blocks and len(blocks) == sum(model.config.moe_layers)
    with torch.no_grad():
        ref = hf(torch.tensor(_ids(), dtype=torch.long)).logits.numpy()
    ours = np.asarray(model(_ids()))
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4
    # the parity means something only if the tokens pick different experts
    x = jax.numpy.asarray(np.random.RandomState(2).randn(64, model.config.hidden_size), jax.numpy.float32)
    _, experts = blocks[0].route(x)
    assert len(set(np.asarray(experts).ravel().tolist())) == model.config.num_experts


def test_routing_variants_change_the_choice(tmp_path_factory):
    """Ernie's correction bias changes which experts are chosen (not their weights' source); PhiMoE's
    sparsemixer weights differ from a softmax over the top 2."""
    from jaxllm.models.moe import route

    x = jax.numpy.asarray(np.random.RandomState(3).randn(64, 64), jax.numpy.float32)
    ernie = jaxllm.load_model(saved("ernie-moe", tmp_path_factory)[0]).layers[1].mlp
    _, with_bias = ernie.route(x)
    _, without = route(x, ernie.router[...], ernie.top_k, True)
    assert (np.asarray(with_bias) != np.asarray(without)).any()
    phimoe = jaxllm.load_model(saved("phimoe", tmp_path_factory)[0]).layers[0].mlp
    weights, experts = phimoe.route(x)
    soft, top2 = route(x, phimoe.router[...], 2, True)
    np.testing.assert_array_equal(experts, top2)
    assert not np.allclose(weights, soft, atol=1e-3)


GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.mark.parametrize("name", ["granitemoeshared", "phimoe", "dbrx", "ernie-moe"])
def test_greedy_chunked_prefill_and_prefix_cache(name, tmp_path_factory):
    path, hf = saved(name, tmp_path_factory)
    llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=3, max_num_batched_tokens=16, block_size=8,
              enforce_eager=True, enable_prefix_caching=True)
    check_greedy_prefix_cache(llm, hf)


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
@pytest.mark.parametrize("name", ["granitemoeshared", "phimoe", "dbrx", "ernie-moe"])
def test_tensor_parallel_matches_one_device(name, tmp_path_factory):
    path, _ = saved(name, tmp_path_factory)
    ref = np.asarray(jaxllm.load_model(path)(_ids()))
    for expert_parallel in (False, True):
        model = jaxllm.load_model(path, tensor_parallel_size=4, enable_expert_parallel=expert_parallel)
        block = next(layer.mlp for layer in model.layers if isinstance(layer.mlp, SparseMoeBlock))
        e, d, _, f = block.gate_up[...].shape
        shard = block.gate_up[...].addressable_shards[0].data.shape
        assert shard == ((e // 4, d, 2, f) if expert_parallel else (e, d, 2, f // 4))
        assert np.abs(np.asarray(model(_ids())) - ref).max() / np.abs(ref).max() <= 1e-5


@pytest.mark.parametrize("name, missing", [
    ("granitemoe", "model.layers.1.block_sparse_moe.input_linear.weight"),
    ("granitemoeshared", "model.layers.0.shared_mlp.output_linear.weight"),
    ("phimoe", "model.layers.1.block_sparse_moe.experts.7.w3.weight"),
    ("dbrx", "transformer.blocks.1.ffn.experts.mlp.v1"),
    ("ernie-moe", "model.layers.3.mlp.moe_statics.e_score_correction_bias"),
])
def test_strict_loading_names_the_key(name, missing, tmp_path_factory, tmp_path):
    path, _ = saved(name, tmp_path_factory)
    tensors = load_file(path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    save_file({k: v for k, v in tensors.items() if k != missing}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=missing.replace(".", r"\.")):
        jaxllm.load_model(tmp_path)
    extra = missing.replace(".1.", ".7.").replace(".0.", ".7.").replace(".3.", ".7.")
    save_file({**tensors, extra: tensors[missing]}, tmp_path / "model.safetensors")
    with pytest.raises(WeightLoadError, match=f"unexpected key '{extra}'"):
        jaxllm.load_model(tmp_path)


@pytest.mark.parametrize("name", ["granitemoeshared", "dbrx"])
def test_load_time_int8_splits_fused_experts(name, tmp_path_factory):
    """quantization="int8" quantizes the experts split out of the fused tensors expert by expert."""
    from jaxllm.models.moe import QuantizedExperts

    path, _ = saved(name, tmp_path_factory)
    model = jaxllm.load_model(path, quantization="int8")
    assert isinstance(model.layers[0].mlp.gate_up, QuantizedExperts)
    ref = np.asarray(jaxllm.load_model(path)(_ids()))
    assert np.abs(np.asarray(model(_ids())) - ref).max() / np.abs(ref).max() < 0.05


def test_ernie_mtp_layer_is_not_loaded(tmp_path_factory, tmp_path):
    """Ernie 4.5 MoE checkpoints may carry their multi-token-prediction layer (``mtp_*`` keys): a speculative
    head that the causal LM does not read (as transformers and vLLM skip it)."""
    path, _ = saved("ernie-moe", tmp_path_factory)
    tensors = load_file(path / "model.safetensors")
    shutil.copy(path / "config.json", tmp_path / "config.json")
    mtp = {"model.mtp_linear_proj.0.weight": np.zeros((64, 128), np.float32),
           "model.mtp_block.0.mlp.gate_proj.weight": np.zeros((96, 64), np.float32)}
    save_file({**tensors, **mtp}, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(np.asarray(jaxllm.load_model(tmp_path)(_ids())),
                                  np.asarray(jaxllm.load_model(path)(_ids())))


def _config(name, tmp_path_factory, **changes):
    path, _ = saved(name, tmp_path_factory)
    hf = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        section, _, field = key.rpartition("__")
        (hf[section] if section else hf)[field] = value
    return hf


def test_config_fields(tmp_path_factory):
    granite = ModelConfig.from_hf(_config("granitemoeshared", tmp_path_factory))
    assert (granite.embedding_multiplier, granite.residual_multiplier, granite.logits_scaling) == (1.5, 0.7, 2.5)
    assert (granite.shared_expert_intermediate_size, granite.shared_expert_gated, granite.norm_topk_prob) == (
        48, False, True)
    # 3 of 8 experts active in both sparse layers; the ungated shared expert has no gate to count
    assert granite.num_params() - granite.num_params(experts_per_layer=3) == 2 * 5 * 3 * 64 * 32
    assert granite.num_params(include_embeddings=False) > 2 * 3 * 64 * 48
    dbrx = ModelConfig.from_hf(_config("dbrx-p2", tmp_path_factory))
    assert (dbrx.hidden_size, dbrx.num_kv_heads, dbrx.clip_qkv, dbrx.moe_norm_p, dbrx.num_experts_per_tok) == (
        64, 2, 0.4, 2.0, 3)
    assert not ModelConfig.from_hf(_config("dbrx", tmp_path_factory,
                                           ffn_config__moe_normalize_expert_weights=None)).norm_topk_prob
    ernie = ModelConfig.from_hf(_config("ernie-moe", tmp_path_factory, moe_layer_end_index=2))
    assert ernie.moe_layers == (False, True, False, False) and ernie.shared_expert_intermediate_size == 32
    phimoe = ModelConfig.from_hf(_config("phimoe", tmp_path_factory))
    assert (phimoe.moe_router, phimoe.moe_router_jitter, phimoe.norm_type, phimoe.lm_head_bias) == (
        "sparsemixer", 0.3, "layer", True)
    assert phimoe.sliding_windows == (7, 7) and phimoe.rope.get("short_mscale") == 1.2


@pytest.mark.parametrize("name, changes, message", [
    ("phimoe", {"num_experts_per_tok": 3}, "num_experts_per_tok=3 is not supported"),
    ("ernie-moe", {"use_bias": True}, "use_bias=True is not supported"),
    ("dbrx", {"ffn_config__moe_normalize_expert_weights": -1}, "moe_normalize_expert_weights=-1"),
    ("dbrx", {"attn_config__clip_qkv": 0}, "clip_qkv=0"),
    ("dbrx", {"tie_word_embeddings": True}, "tie_word_embeddings=True is not supported"),
    ("granitemoe", {"num_experts_per_tok": 9}, "num_experts_per_tok=9"),
])
def test_unsupported_options_are_clear(name, changes, message, tmp_path_factory):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf(_config(name, tmp_path_factory, **changes))


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
def test_engine_greedy_tokens_under_expert_parallelism(tmp_path_factory):
    """Ernie's correction-bias routing and ungated shared experts in the engine's step on 4 devices."""
    path, _ = saved("ernie-moe", tmp_path_factory)
    prompts = [{"prompt_token_ids": list(range(3, n))} for n in (30, 8, 17)]

    def run(**kw):
        llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True, **kw)
        return [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY, use_tqdm=False)]

    assert run(tensor_parallel_size=4, enable_expert_parallel=True) == run()


def test_phimoe_longrope_mscale_follows_the_length():
    """A Phi-3.5-MoE config.json (4.x ``rope_scaling`` of type "longrope"): cos/sin scaled by short_mscale up to
    original_max_position_embeddings and by long_mscale (with the long factors) beyond, per sequence."""
    from jaxllm.models.layers import rope_cos_sin

    hf = {"architectures": ["PhimoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 16,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_local_experts": 4, "max_position_embeddings": 1024,
          "original_max_position_embeddings": 64, "rope_theta": 10000.0,
          "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [4.0] * 8,
                           "short_mscale": 1.25, "long_mscale": 1.5}}
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope.rope_type == "longrope" and cfg.sliding_windows == (None,)
    positions = jax.numpy.asarray([10, 10])
    cos, sin = rope_cos_sin(positions, cfg.rope, cfg.head_dim, seq_lens=jax.numpy.asarray([64, 65]))
    radius = np.sqrt(np.asarray(cos) ** 2 + np.asarray(sin) ** 2)
    np.testing.assert_allclose(radius[0], 1.25, rtol=1e-6)
    np.testing.assert_allclose(radius[1], 1.5, rtol=1e-6)
    inv = 1.0 / (10000.0 ** (np.arange(0, 16, 2) / 16))
    np.testing.assert_allclose(np.asarray(cos)[1], 1.5 * np.cos(10 * inv / 4.0), rtol=1e-5)


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
@pytest.mark.parametrize("name", ["granitemoeshared", "ernie-moe"])
def test_one_all_reduce_per_moe_layer(name, tmp_path_factory):
    """The ungated shared experts run inside the experts' shard_map: one all-reduce of the [tokens, hidden]
    activations per MoE layer (as a dense MLP's down projection), under both expert layouts."""
    from parallel.test_tp_collectives import COLLECTIVE

    from jaxllm.runner.programs import ForwardKey

    path, _ = saved(name, tmp_path_factory)
    for expert_parallel in (False, True):
        llm = LLM(str(path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=16,
                  enforce_eager=True, tensor_parallel_size=4, enable_expert_parallel=expert_parallel)
        runner, cfg = llm.llm_engine.runner, llm.model_config
        bucket = runner.ladder.buckets[-1]
        text = runner.programs.get(ForwardKey(bucket)).as_text()
        found = sorted((op, shape.split("{")[0]) for shape, op in COLLECTIVE.findall(text))
        want = [("all-gather", f"f32[{bucket.num_seqs},{cfg.vocab_size}]")]
        assert found == want + [("all-reduce", f"f32[{bucket.num_tokens},{cfg.hidden_size}]")] * (
            2 * cfg.num_layers + 1)
