"""fp8 checkpoints (compressed-tensors per-channel, AutoFP8-style per-tensor with input_scale) load straight into
the fp8 ``QuantizedWeight``: logits equal the numpy-dequantized fp32 model's, greedy tokens too."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import hf_greedy
from int4_checkpoints import fp8_checkpoint

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.models.quant import QuantizedWeight


@pytest.fixture(scope="module", params=["channel", "tensor"])
def ckpt(request, tmp_path_factory):
    return fp8_checkpoint(tmp_path_factory.mktemp(f"fp8-{request.param}"), request.param)


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def test_fp8_checkpoint_logits_and_greedy(ckpt):
    qdir, ddir, hf = ckpt
    x = np.random.RandomState(0).randint(0, 256, (2, 24)).astype(np.int32)
    model = jaxllm.load_model(qdir)
    assert model.config.quantization == "fp8" and model.config.quant_from_checkpoint
    gate_up = model.layers[0].mlp.gate_up
    assert isinstance(gate_up, QuantizedWeight) and gate_up.qweight[...].dtype == jnp.float8_e4m3fn
    assert gate_up.scale[...].shape == (2, 128) and gate_up.scale[...].dtype == jnp.float32
    assert rel_err(model(x), jaxllm.load_model(ddir)(x)) <= 1e-5
    assert rel_err(jaxllm.load_model(qdir, quantization="fp8", tensor_parallel_size=2)(x), model(x)) <= 1e-5
    prompts = [list(range(1, n)) for n in (5, 19)]
    llm = LLM(str(qdir), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(hf, p, 6) for p in prompts]


def test_fp8_checkpoint_dummy_and_mismatch(ckpt):
    qdir, _, _ = ckpt
    dummy = jaxllm.load_model(qdir, load_format="dummy")
    assert dummy.layers[1].self_attn.o_proj.qweight[...].dtype == jnp.float8_e4m3fn
    with pytest.raises(ValueError, match="quantization='int8' does not match the checkpoint"):
        jaxllm.load_model(qdir, quantization="int8")
