"""``jaxllm convert`` writes an Orbax checkpoint; LLM / load_model read it and give the same logits and tokens
as the HF checkpoint it came from (also quantized, and restored onto another tensor-parallel size)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import save_tiny_model, save_tokenizer_with_template

import jaxllm
from jaxllm.cli import main as cli_main


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    save_tiny_model(path, "Qwen3ForCausalLM", vocab_size=448, head_dim=16, eos_token_id=0)
    save_tokenizer_with_template(path)
    return path


IDS = jnp.array([[3, 17, 99, 4, 250, 7]], jnp.int32)


def test_convert_and_load_match_the_source(hf_dir, tmp_path):
    out = tmp_path / "orbax"
    assert cli_main(["convert", str(hf_dir), str(out)]) == 0
    assert (out / "jaxllm_orbax.json").is_file() and (out / "tokenizer.json").is_file()
    ref = np.asarray(jaxllm.load_model(hf_dir)(IDS))
    got = np.asarray(jaxllm.load_model(out)(IDS))
    np.testing.assert_array_equal(got, ref)
    params = jaxllm.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    llm_out = jaxllm.LLM(str(out), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)
    llm_ref = jaxllm.LLM(str(hf_dir), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)
    assert (llm_out.generate("hello world", params, use_tqdm=False)[0].outputs[0].token_ids
            == llm_ref.generate("hello world", params, use_tqdm=False)[0].outputs[0].token_ids)


def test_quantized_and_resharded(hf_dir, tmp_path):
    from jaxllm.convert import convert_checkpoint

    out = tmp_path / "int8"
    convert_checkpoint(hf_dir, out, quantization="int8", dtype="float32", tensor_parallel_size=2)
    ref = np.asarray(jaxllm.load_model(hf_dir, dtype="float32", quantization="int8")(IDS))
    for tp in (1, 4):
        got = np.asarray(jaxllm.load_model(out, tensor_parallel_size=tp)(IDS))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="holds int8 parameters"):
        jaxllm.load_model(out, quantization="fp8")


def test_errors(hf_dir, tmp_path):
    from jaxllm.convert import convert_checkpoint

    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        convert_checkpoint(hf_dir, out)
    good = tmp_path / "good"
    convert_checkpoint(hf_dir, good)
    marker = good / "jaxllm_orbax.json"
    marker.write_text(marker.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="format 99"):
        jaxllm.load_model(good)
    assert os.path.isdir(good / "params")
