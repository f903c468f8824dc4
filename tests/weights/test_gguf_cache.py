"""The dequantized-GGUF cache (jaxllm/weights/gguf_cache.py): the first load writes an entry, later loads read
the same tensors from it, an interrupted or stale entry is never read, and LLM(gguf_cache_dir=...) uses it."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("gguf")

from test_gguf import tiny_model, write_gguf

from jaxllm.weights import gguf_cache
from jaxllm.weights.gguf import GGUFCheckpoint


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "m.gguf"
    return write_gguf(path, tiny_model("llama", True), "llama", pre="smollm",
                      quantize={"model.layers.0.mlp.up_proj.weight": "Q8_0"})


def test_first_load_writes_the_entry_later_loads_read_it(gguf_file, tmp_path):
    ckpt = GGUFCheckpoint(gguf_file)
    expected = dict(ckpt.tensors())
    first = dict(gguf_cache.cached_tensors(ckpt, str(tmp_path)))
    entry = gguf_cache.entry_dir(os.fspath(gguf_file), str(tmp_path))
    assert sorted(os.listdir(entry)) == ["index.json", "tensors.f32"]
    second = dict(gguf_cache.cached_tensors(GGUFCheckpoint(gguf_file), str(tmp_path)))
    assert list(second) == list(first) == list(expected)
    for name, value in expected.items():
        assert isinstance(second[name], np.memmap) and second[name].dtype == np.float32
        np.testing.assert_array_equal(second[name], value, err_msg=name)
        np.testing.assert_array_equal(first[name], value, err_msg=name)


def test_interrupted_load_leaves_no_entry_and_no_cache_dir_means_none(gguf_file, tmp_path):
    tensors = gguf_cache.cached_tensors(GGUFCheckpoint(gguf_file), str(tmp_path))
    next(tensors)
    tensors.close()  # a load stopped by an error after the first tensor
    entry = gguf_cache.entry_dir(os.fspath(gguf_file), str(tmp_path))
    assert os.listdir(entry) == []
    assert not any(isinstance(a, np.memmap) for _, a in gguf_cache.cached_tensors(GGUFCheckpoint(gguf_file), ""))


def test_a_changed_file_gets_a_new_entry(gguf_file, tmp_path):
    before = gguf_cache.entry_dir(os.fspath(gguf_file), str(tmp_path))
    st = os.stat(gguf_file)
    os.utime(gguf_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert gguf_cache.entry_dir(os.fspath(gguf_file), str(tmp_path)) != before


def test_llm_reads_through_the_cache(gguf_file, tmp_path):
    from jaxllm import LLM, SamplingParams

    kwargs = {"gguf_cache_dir": str(tmp_path), "enforce_eager": True, "max_num_seqs": 2,
              "max_num_batched_tokens": 16, "skip_tokenizer_init": True}
    params = SamplingParams(temperature=0, max_tokens=4)
    cold = LLM(os.fspath(gguf_file), **kwargs).generate({"prompt_token_ids": [5, 6, 7]}, params, use_tqdm=False)
    assert os.path.isfile(os.path.join(gguf_cache.entry_dir(os.fspath(gguf_file), str(tmp_path)), "index.json"))
    warm = LLM(os.fspath(gguf_file), **kwargs).generate({"prompt_token_ids": [5, 6, 7]}, params, use_tqdm=False)
    assert warm[0].outputs[0].token_ids == cold[0].outputs[0].token_ids
