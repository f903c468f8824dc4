"""Calibrated fp8 KV-cache scales from the checkpoint (``self_attn.k_scale`` / ``v_scale`` / ``kv_scale``):
loaded per layer, used by the fp8 cache's write and read, ignored by a bf16/fp32 cache, bad values rejected."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hf_models import save_tiny_model
from safetensors.numpy import load_file, save_file

import jaxllm
from jaxllm import LLM, SamplingParams
from jaxllm.weights.loader import WeightLoadError

PROMPTS = [[int(x) for x in np.random.RandomState(i).randint(1, 256, n)] for i, n in enumerate((9, 21, 14))]


def with_scales(src: str, dst: str, scales: dict) -> str:
    """A copy of the checkpoint at ``src`` with extra scale tensors."""
    shutil.copytree(src, dst)
    f = os.path.join(dst, "model.safetensors")
    tensors = load_file(f)
    tensors.update({k: np.asarray(v, np.float32) for k, v in scales.items()})
    save_file(tensors, f, metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    plain = tmp_path_factory.mktemp("kvs") / "plain"
    save_tiny_model(plain, "LlamaForCausalLM", vocab_size=256, num_hidden_layers=2)
    scaled = with_scales(str(plain), str(plain.parent / "scaled"), {
        "model.layers.0.self_attn.k_scale": np.float32(0.5), "model.layers.0.self_attn.v_scale": np.float32(2.0),
        "model.layers.1.self_attn.kv_scale": np.array([0.25], np.float32)})
    return str(plain), scaled


def run(path, **kw):
    llm = LLM(path, skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True,
              kv_cache_memory_bytes=1 << 20, **kw)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    return llm.llm_engine.runner, [o.outputs[0].token_ids for o in outs]


def test_scales_are_loaded_per_layer(checkpoints):
    plain, scaled = checkpoints
    model = jaxllm.load_model(scaled)
    np.testing.assert_array_equal(np.asarray(model.layers[0].self_attn.kv_scale[...]), [0.5, 2.0])
    np.testing.assert_array_equal(np.asarray(model.layers[1].self_attn.kv_scale[...]), [0.25, 0.25])
    np.testing.assert_array_equal(np.asarray(jaxllm.load_model(plain).layers[0].self_attn.kv_scale[...]), [1, 1])


@pytest.mark.parametrize("tp", [1, 2])
def test_fp8_cache_stores_k_over_k_scale(checkpoints, tp):
    plain, scaled = checkpoints
    runner1, tokens1 = run(plain, kv_cache_dtype="fp8", tensor_parallel_size=tp)
    runner2, tokens2 = run(scaled, kv_cache_dtype="fp8", tensor_parallel_size=tp)
    # the same K/V reach layer 0's cache (same weights, same prompts); scale 0.5 doubles the stored keys and
    # scale 2.0 halves the stored values
    k1, v1 = (np.abs(np.asarray(runner1.kv_caches[0][i], np.float32)).max() for i in (0, 1))
    k2, v2 = (np.abs(np.asarray(runner2.kv_caches[0][i], np.float32)).max() for i in (0, 1))
    assert k2 / k1 == pytest.approx(2.0, rel=0.08) and v2 / v1 == pytest.approx(0.5, rel=0.08)
    # read back with the same scales: the tokens follow the fp32 cache as closely as unscaled fp8 does
    _, ref = run(plain)
    assert sum(a == b for a, b in zip(tokens2, ref)) >= sum(a == b for a, b in zip(tokens1, ref)) - 1


def test_full_precision_cache_ignores_the_scales(checkpoints):
    plain, scaled = checkpoints
    assert run(scaled)[1] == run(plain)[1]


@pytest.mark.parametrize("value,match", [(np.float32(-1.0), "must be a finite number > 0"),
                                         (np.array([1.0, 2.0], np.float32), "must be a scalar or hold one value")])
def test_bad_scale_is_a_clear_error(checkpoints, tmp_path, value, match):
    bad = with_scales(checkpoints[0], str(tmp_path / "bad"), {"model.layers.1.self_attn.k_scale": value})
    with pytest.raises(WeightLoadError, match=r"'model\.layers\.1\.self_attn\.k_scale'.*" + match):
        jaxllm.load_model(bad)
