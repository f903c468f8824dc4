"""AWQ and GPTQ 4-bit checkpoints on CPU: the packers in int4_formats.py write them, jaxllm loads them.

The reference is the same model saved with the numpy-dequantized weights as an ordinary fp32 checkpoint:
jaxllm's int4 model does the same math (dequantize, then an fp32 matmul), so logits agree to fp32 rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import hf_greedy
from int4_checkpoints import int4_checkpoint
from int4_formats import dequantize

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.models.quant_int4 import Int4Weight, dequantize_int4_weight, groupable

# (method, group, sym, desc_act, arch, dims)
CASES = {
    "awq-g32": ("awq", 32, False, False, "LlamaForCausalLM", {}),
    "gptq-g64-sym": ("gptq", 64, True, False, "LlamaForCausalLM", {}),
    "gptq-g32-act-order": ("gptq", 32, False, True, "LlamaForCausalLM", {}),
    "gptq-per-channel-qwen2": ("gptq", -1, False, False, "Qwen2ForCausalLM", {}),
    "awq-g128-qwen2": ("awq", 128, False, False, "Qwen2ForCausalLM",
                       {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4}),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = {}
    for name, (method, group, sym, desc_act, arch, dims) in CASES.items():
        out[name] = int4_checkpoint(tmp_path_factory.mktemp(name), method, group, sym=sym, desc_act=desc_act,
                                    arch=arch, **dims)
    return out


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def ids(batch=2, length=24, vocab=256, seed=0):
    return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("case", list(CASES))
def test_unpacked_weights_equal_numpy_dequantization(ckpts, case):
    qdir, _, _, packed = ckpts[case]
    model = jaxllm.load_model(qdir)
    cfg = model.config
    assert cfg.quantization == CASES[case][0] and cfg.quant_desc_act == CASES[case][3]
    layer = model.layers[1]
    checks = {"model.layers.1.self_attn.k_proj": layer.self_attn.k_proj,
              "model.layers.1.self_attn.o_proj": layer.self_attn.o_proj,
              "model.layers.1.mlp.down_proj": layer.mlp.down}
    for prefix, weight in checks.items():
        assert isinstance(weight, Int4Weight) and weight.qweight[...].dtype == jnp.int32
        q, zeros, scales, g_idx = packed[prefix]
        want = dequantize(q, zeros, scales) if g_idx is None else (q - zeros[g_idx]) * scales.astype(np.float32)[g_idx]
        got = np.asarray(dequantize_int4_weight(weight, jnp.float32)).reshape(q.shape)
        if weight.perm is not None:  # rows are in the sorted (group) order
            want = want[np.asarray(weight.perm[...])]
        np.testing.assert_array_equal(got, want)
    gate_up = np.asarray(dequantize_int4_weight(layer.mlp.gate_up, jnp.float32))  # [D, 2, F]
    q, zeros, scales, g_idx = packed["model.layers.1.mlp.up_proj"]
    want = dequantize(q, zeros, scales) if g_idx is None else (q - zeros[g_idx]) * scales.astype(np.float32)[g_idx]
    if layer.mlp.gate_up.perm is not None:
        want = want[np.asarray(layer.mlp.gate_up.perm[...])]
    np.testing.assert_array_equal(gate_up[:, 1, :], want)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_dequantized_fp32_model(ckpts, case):
    qdir, ddir, _, _ = ckpts[case]
    x = ids()
    logits = np.asarray(jaxllm.load_model(qdir)(x))
    assert rel_err(logits, jaxllm.load_model(ddir)(x)) <= 1e-5


def test_bfloat16_and_explicit_method(ckpts):
    qdir, ddir, _, _ = ckpts["awq-g32"]
    x = ids(1, 16)
    model = jaxllm.load_model(qdir, "bfloat16", quantization="awq")
    assert model.layers[0].self_attn.q_proj.scales[...].dtype == jnp.float16
    assert rel_err(model(x), jaxllm.load_model(ddir)(x)) <= 0.05


def test_greedy_generate_matches_dequantized_hf(ckpts):
    prompts = [list(range(1, n)) for n in (5, 19, 33)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    for case in ("awq-g32", "gptq-g32-act-order"):
        qdir, _, hf, _ = ckpts[case]
        llm = LLM(str(qdir), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32,
                  enforce_eager=True)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(hf, p, 8) for p in prompts], case


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (fake) devices")
@pytest.mark.parametrize("case", ["awq-g32", "gptq-g32-act-order", "gptq-per-channel-qwen2", "awq-g128-qwen2"])
def test_tensor_parallel_matches_tp1(ckpts, case):
    qdir, _, _, _ = ckpts[case]
    x = ids(2, 20, seed=2)
    ref = jaxllm.load_model(qdir)
    tp2 = jaxllm.load_model(qdir, tensor_parallel_size=2)
    o_proj, gate_up = tp2.layers[0].self_attn.o_proj, tp2.layers[0].mlp.gate_up
    cfg = tp2.config
    d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim
    assert {s.data.shape for s in o_proj.qweight[...].addressable_shards} == {(k // 16, d)}  # K split
    assert {s.data.shape for s in gate_up.qweight[...].addressable_shards} == {(d // 8, 2, f // 2)}  # F split
    np.testing.assert_array_equal(np.asarray(o_proj.qweight[...]), np.asarray(ref.layers[0].self_attn.o_proj.qweight[...]))
    assert rel_err(tp2(x), ref(x)) <= 1e-5


@pytest.mark.skipif(len(jax.devices()) < 4, reason="needs 4 (fake) devices")
def test_tensor_parallel_groups_must_not_straddle_devices(ckpts):
    # down_proj: 256 input features, 2 groups of 128; TP=4 would give 64 per device. (o_proj's 128 features are
    # one group: its scales are replicated and every device uses them, which is fine.)
    qdir, _, _, _ = ckpts["awq-g128-qwen2"]
    with pytest.raises(ValueError, match="tensor_parallel_size=4 splits down_proj's 256 input features into 64 per "
                                         "device, not a multiple of the group size 128"):
        jaxllm.load_model(qdir, tensor_parallel_size=4)


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (fake) devices")
def test_fused_kernel_path_per_shard_in_interpret_mode(ckpts):
    """The Pallas kernel (interpret mode on CPU) through shard_map: TP=2 with the kernel == TP=1 reference."""
    qdir, _, _, _ = ckpts["gptq-g32-act-order"]
    x = ids(1, 6, seed=4)
    ref = np.asarray(jaxllm.load_model(qdir)(x))
    for tp in (1, 2):
        model = jaxllm.load_model(qdir, tensor_parallel_size=tp, quant_matmul_impl="pallas_triton")
        assert rel_err(model(x), ref) <= 1e-5


def test_engine_path_through_the_kernel_in_interpret_mode(ckpts):
    """LLM.generate (paged forward) with the Pallas kernel forced (interpret mode on CPU): HF's greedy tokens."""
    qdir, _, hf, _ = ckpts["gptq-g32-act-order"]
    llm = LLM(str(qdir), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=16, enforce_eager=True,
              quant_matmul_impl="pallas_triton")
    prompts = [list(range(1, 7)), list(range(3, 12))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(hf, p, 4) for p in prompts]


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (fake) devices")
@pytest.mark.parametrize("case", ["awq-g32", "gptq-g32-act-order"])
def test_nk_layout_matches_packed(ckpts, case, monkeypatch):
    """Hopper's "nk" weight layout (jaxllm.weights.int4_layout; its reference matmul on CPU) gives the packed
    layout's logits at TP=1 and TP=2, with qweight [*out_dims, K] int4 sharded along the same named axes."""
    from jaxllm.ops import quant_matmul
    qdir, _, _, _ = ckpts[case]
    x = ids(2, 9, seed=6)
    ref = np.asarray(jaxllm.load_model(qdir)(x))
    monkeypatch.setattr(quant_matmul, "weight_layout", lambda dtype, impl=None: "nk")
    for tp in (1, 2):
        model = jaxllm.load_model(qdir, tensor_parallel_size=tp)
        o_proj, gate_up = model.layers[0].self_attn.o_proj, model.layers[0].mlp.gate_up
        cfg = model.config
        d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim
        assert o_proj.layout == "nk" and o_proj.qweight[...].dtype == jnp.int4
        attn = model.layers[0].self_attn  # q / k / v share x: one grouped product unless act order gathers x
        assert groupable((attn.q_proj, attn.k_proj, attn.v_proj)) == (attn.q_proj.perm is None)
        assert {s.data.shape for s in o_proj.qweight[...].addressable_shards} == {(d, k // tp)}  # K split
        assert {s.data.shape for s in gate_up.qweight[...].addressable_shards} == {(2, f // tp, d)}  # F split
        assert rel_err(model(x), ref) <= 1e-5
