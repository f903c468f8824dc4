"""Load-time weight-only quantization (quantization="int8" / "fp8") of the Llama family on CPU.

The reference is independent of jaxllm's quantizer: numpy quantizes every decoder linear weight of the HF
checkpoint per output row (HF weights are [out, in], so a row is one output channel), and the dequantized
weights are saved as an ordinary fp32 checkpoint. The quantized model must match that checkpoint's model to
fp32 rounding (the math is the same, only the order of the scale multiply differs) and the original model
within quantization error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from flax import nnx
from hf_models import hf_greedy, save_tiny_model

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.models.quant import QuantizedWeight, dequantize, linear, quantize

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NP_QUANT = {"int8": (127.0, np.int8), "fp8": (448.0, ml_dtypes.float8_e4m3fn)}
# fp8 e4m3 keeps 3 mantissa bits: round-to-nearest error <= 2^-4 relative (plus subnormals near 0).
E4M3_REL = 2.0 ** -4


def np_fake_quant(w: np.ndarray, method: str) -> np.ndarray:
    """Quantize-dequantize an HF weight [out, in] per output row, in numpy (float32 math like jaxllm)."""
    qmax, qdtype = NP_QUANT[method]
    absmax = np.abs(w).max(axis=1, keepdims=True)
    scale = np.where(absmax > 0, absmax / np.float32(qmax), np.float32(1)).astype(np.float32)
    q = np.clip(w / scale, -qmax, qmax)
    q = (np.round(q) if method == "int8" else q).astype(qdtype)
    return q.astype(np.float32) * scale


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """({"orig", "int8", "fp8"} -> path, same keys -> torch model): a tiny Llama and its numpy-dequantized
    copies."""
    paths, models = {}, {}
    paths["orig"] = tmp_path_factory.mktemp("orig")
    models["orig"] = save_tiny_model(paths["orig"], "LlamaForCausalLM")
    for method in NP_QUANT:
        paths[method] = tmp_path_factory.mktemp(f"deq-{method}")
        hf = save_tiny_model(paths[method], "LlamaForCausalLM")  # same seed: same weights as "orig"
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if name.endswith(".weight") and name.split(".")[-2] in LINEARS:
                    p.copy_(torch.from_numpy(np_fake_quant(p.numpy(), method)))
        hf.save_pretrained(str(paths[method]))
        models[method] = hf
    return paths, models


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("method", ["int8", "fp8"])
def test_quantize_round_trip_per_output_channel(method):
    # o_proj-like [H, Dh, D]: two contracted axes, scale per output column
    w = jax.random.normal(jax.random.key(0), (4, 8, 16), jnp.float32) * jnp.linspace(0.01, 3.0, 16)
    w = w.at[:, :, 3].set(0.0)  # an all-zero channel must not divide by zero
    qweight, scale = quantize(w, method, in_ndim=2)
    assert qweight.dtype == {"int8": jnp.int8, "fp8": jnp.float8_e4m3fn}[method] and qweight.shape == w.shape
    assert scale.dtype == jnp.float32 and scale.shape == (16,)
    err = np.abs(np.asarray(dequantize(qweight, scale)) - np.asarray(w))
    if method == "int8":
        assert np.all(err <= np.asarray(scale) / 2 * (1 + 1e-6))
        assert int(jnp.max(jnp.abs(qweight.astype(jnp.int32)))) == 127
    else:
        tiny = np.asarray(scale) * 2.0 ** -9  # e4m3's smallest subnormal step, in weight units
        assert np.all(err <= E4M3_REL * np.abs(np.asarray(w)) + tiny)
    assert np.all(np.asarray(dequantize(qweight, scale))[:, :, 3] == 0)
    # the same numbers as the independent numpy quantizer (HF layout [out, in] = w.reshape(32, 16).T)
    hf = np.asarray(w).reshape(32, 16).T
    ours = np.asarray(dequantize(qweight, scale)).reshape(32, 16).T
    np.testing.assert_allclose(ours, np_fake_quant(hf, method), rtol=1e-6, atol=0)


def test_linear_scales_the_output_not_the_weight():
    x = jnp.ones((3, 16), jnp.float32)
    w = QuantizedWeight((16, 4, 8), "int8", ("embed", "q_heads", "head_dim"), 1, nnx.Rngs(0))
    jaxpr = jax.make_jaxpr(lambda x: linear(x, w, "...d,dhk->...hk"))(x)
    muls = [e for e in jaxpr.eqns if e.primitive.name == "mul"]
    assert muls and all(e.outvars[0].aval.shape == (3, 4, 8) for e in muls)
    ref = jnp.einsum("td,dhk->thk", x, dequantize(w.qweight[...], w.scale[...]))
    assert rel_err(linear(x, w, "...d,dhk->...hk"), ref) <= 1e-6


@pytest.mark.parametrize("method", ["int8", "fp8"])
def test_logits_match_dequantized_fp32_model(checkpoints, method):
    paths, _ = checkpoints
    ids = np.random.RandomState(0).randint(0, 256, (2, 24)).astype(np.int32)
    model = jaxllm.load_model(paths["orig"], quantization=method)
    layer0, layer1 = model.layers[0], model.layers[1]
    for proj in (layer0.self_attn.q_proj, layer1.self_attn.o_proj, layer0.mlp.gate_up, layer1.mlp.down):
        assert isinstance(proj, QuantizedWeight) and proj.qweight[...].dtype.itemsize == 1
    for kept in (model.embed, model.lm_head, model.norm.weight, model.layers[0].input_layernorm.weight):
        assert isinstance(kept, nnx.Param) and kept[...].dtype == jnp.float32
    logits = np.asarray(model(ids))
    assert rel_err(logits, jaxllm.load_model(paths[method])(ids)) <= 1e-4
    quant_error = rel_err(logits, jaxllm.load_model(paths["orig"])(ids))
    assert 0 < quant_error <= {"int8": 0.03, "fp8": 0.1}[method]


def test_bfloat16_model_and_dummy_weights(checkpoints):
    paths, _ = checkpoints
    ids = np.random.RandomState(0).randint(0, 256, (1, 16)).astype(np.int32)
    bf16 = jaxllm.load_model(paths["orig"], "bfloat16", quantization="int8")
    assert bf16.layers[0].mlp.down.scale[...].dtype == jnp.float32 and bf16.embed[...].dtype == jnp.bfloat16
    assert rel_err(bf16(ids), jaxllm.load_model(paths["int8"])(ids)) <= 0.05
    dummy = jaxllm.load_model(paths["orig"], quantization="fp8", load_format="dummy")
    assert dummy.layers[1].self_attn.k_proj.qweight[...].dtype == jnp.float8_e4m3fn
    assert float(jnp.max(jnp.abs(dummy.layers[1].mlp.gate_up.qweight[...].astype(jnp.float32)))) == 448.0
    assert np.isfinite(np.asarray(dummy(ids))).all()


def test_greedy_generate_matches_dequantized_reference(checkpoints):
    paths, models = checkpoints
    prompts = [list(range(1, n)) for n in (5, 19, 33)]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    for method, tp in (("int8", 1), ("fp8", 1), ("int8", 2)):
        llm = LLM(str(paths["orig"]), skip_tokenizer_init=True, quantization=method, tensor_parallel_size=tp,
                  max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(models[method], p, 8) for p in prompts]


def test_gguf_checkpoint_quantizes_like_safetensors(tmp_path):
    pytest.importorskip("gguf")
    from weights.test_gguf import tiny_model, write_gguf

    hf = tiny_model("llama", False)
    path = write_gguf(tmp_path / "m.gguf", hf, "llama", pre="smollm")
    hf.save_pretrained(str(tmp_path / "st"))
    ids = np.random.RandomState(3).randint(0, hf.config.vocab_size, (1, 12)).astype(np.int32)
    from_gguf = jaxllm.load_model(path, quantization="int8")
    assert isinstance(from_gguf.layers[0].self_attn.q_proj, QuantizedWeight)
    assert rel_err(from_gguf(ids), jaxllm.load_model(tmp_path / "st", quantization="int8")(ids)) <= 1e-5


@pytest.mark.skipif(len(jax.devices()) < 2, reason="needs 2 (fake) devices")
def test_tensor_parallel_int8_matches_tp1(checkpoints):
    paths, _ = checkpoints
    ids = np.random.RandomState(2).randint(0, 256, (2, 20)).astype(np.int32)
    ref = jaxllm.load_model(paths["orig"], quantization="int8")
    tp2 = jaxllm.load_model(paths["orig"], quantization="int8", tensor_parallel_size=2)
    o_proj, gate_up = tp2.layers[0].self_attn.o_proj, tp2.layers[0].mlp.gate_up
    assert {s.data.shape for s in o_proj.qweight[...].addressable_shards} == {(2, 16, 64)}  # heads split
    assert {s.data.shape for s in o_proj.scale[...].addressable_shards} == {(64,)}  # output dim replicated
    assert {s.data.shape for s in gate_up.scale[...].addressable_shards} == {(2, 64)}  # F split, like qweight
    ref_o_proj = ref.layers[0].self_attn.o_proj
    np.testing.assert_array_equal(np.asarray(o_proj.qweight[...]), np.asarray(ref_o_proj.qweight[...]))
    assert rel_err(tp2(ids), ref(ids)) <= 1e-5


def test_unsupported_methods(checkpoints):
    paths, _ = checkpoints
    for bad in ("bitsandbytes", "INT8", 8):
        with pytest.raises(ValueError, match=rf"quantization={bad!r} is not supported.*None, 'int8', 'fp8', 'awq', "
                                             rf"'gptq'"):
            jaxllm.load_model(paths["orig"], quantization=bad)
    with pytest.raises(ValueError, match="quantization='marlin' is not supported"):
        LLM(str(paths["orig"]), quantization="marlin")
    with pytest.raises(ValueError, match="quantization='gptq' needs a GPTQ checkpoint, but config.json has no "
                                         "quantization_config"):
        jaxllm.load_model(paths["orig"], quantization="gptq")
