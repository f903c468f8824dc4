"""A corpus of truncated and corrupted safetensors / GGUF files, built here: each is a clear ValueError naming
the file, raised while the header is read (before any tensor data), within a second."""

from __future__ import annotations

import json
import os
import random
import struct
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxllm.weights.gguf_reader import GGUFFile
from jaxllm.weights.safetensors_reader import SafetensorsFile, checkpoint_files


@pytest.fixture
def good_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a.weight": np.arange(24, dtype=np.float32).reshape(4, 6),
               "b.bias": np.ones(5, np.float16)}, os.fspath(path))
    return path


def _raw_header(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write(path, header: dict | bytes, body: bytes, header_len: int | None = None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + body)
    return path


def _assert_clear(path, opener, match=None):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match) as err:
        opener(os.fspath(path))
    assert os.fspath(path) in str(err.value)
    assert time.perf_counter() - t0 < 1.0


def test_good_file_reads(good_safetensors):
    st = SafetensorsFile(good_safetensors)
    np.testing.assert_array_equal(st.tensor("a.weight"), np.arange(24, dtype=np.float32).reshape(4, 6))


@pytest.mark.parametrize("cut", [0, 5, 8, 20, -1, -10])
def test_truncated_safetensors(good_safetensors, cut):
    data = good_safetensors.read_bytes()
    good_safetensors.write_bytes(data[:cut])
    _assert_clear(good_safetensors, SafetensorsFile)


def test_corrupted_safetensors_headers(good_safetensors, tmp_path):
    header, body = _raw_header(good_safetensors)
    p = tmp_path / "bad.safetensors"
    cases = {
        "huge header length": (header, body, 2**60),
        "not json": (b"{not json at all", body, None),
        "not utf-8": (b"\xff\xfe\xfd", body, None),
        "a list": (b"[1, 2]", body, None),
        "unknown dtype": ({**header, "a.weight": {**header["a.weight"], "dtype": "Q4"}}, body, None),
        "negative dim": ({**header, "a.weight": {**header["a.weight"], "shape": [-4, 6]}}, body, None),
        "offsets past the end": ({**header, "b.bias": {**header["b.bias"], "data_offsets": [96, 10**12]}}, body,
                                 None),
        "reversed offsets": ({**header, "b.bias": {**header["b.bias"], "data_offsets": [106, 96]}}, body, None),
        "size mismatch": ({**header, "a.weight": {**header["a.weight"], "shape": [5, 6]}}, body, None),
        "missing field": ({**header, "a.weight": {"dtype": "F32"}}, body, None),
    }
    for h, b, n in cases.values():  # keys say what each case breaks
        _write(p, h, b, n)
        _assert_clear(p, SafetensorsFile)


def test_random_bit_flips_in_safetensors_header(good_safetensors, tmp_path):
    data = bytearray(good_safetensors.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    rng = random.Random(0)
    p = tmp_path / "flipped.safetensors"
    for _ in range(200):
        flipped = bytearray(data)
        pos = rng.randrange(8 + n)
        flipped[pos] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(flipped))
        try:
            st = SafetensorsFile(p)
        except ValueError as e:
            assert os.fspath(p) in str(e)
            continue
        for name in st.names():  # a flip that still parses must still give in-bounds, well-sized tensors
            st.tensor(name)


def test_index_shard_outside_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    save_file({"x": np.zeros(2, np.float32)}, os.fspath(other / "model.safetensors"))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"x": "../other/model.safetensors"}}))
    with pytest.raises(ValueError, match="outside the model folder"):
        checkpoint_files(folder)
    (folder / "model.safetensors.index.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        checkpoint_files(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="weight_map"):
        checkpoint_files(folder)


@pytest.fixture
def good_gguf(tmp_path):
    import gguf

    path = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(os.fspath(path), "llama")
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    w.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("output_norm.weight", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_good_gguf_reads(good_gguf):
    f = GGUFFile(os.fspath(good_gguf))
    np.testing.assert_array_equal(f.tensors["token_embd.weight"].data, np.arange(12, dtype=np.float32).reshape(3, 4))


def test_truncated_gguf(good_gguf):
    import gguf

    last = gguf.GGUFReader(good_gguf).tensors[-1]
    data_end = int(last.data_offset) + int(last.n_bytes)  # the writer pads the file after this
    data = good_gguf.read_bytes()
    for cut in (0, 3, 10, 24, 40, len(data) // 2, data_end - 1):
        good_gguf.write_bytes(data[:cut])
        _assert_clear(good_gguf, GGUFFile)


def test_gguf_huge_counts_and_offsets(good_gguf, tmp_path):
    data = good_gguf.read_bytes()
    p = tmp_path / "bad.gguf"
    for patch in (struct.pack("<Q", 2**62), struct.pack("<Q", 10**9)):  # tensor count / metadata count
        for at in (8, 16):
            p.write_bytes(data[:at] + patch + data[at + 8:])
            _assert_clear(p, GGUFFile)


def test_random_bit_flips_in_gguf(good_gguf, tmp_path):
    data = good_gguf.read_bytes()
    first_tensor = data.index(b"token_embd.weight")  # flip bytes of the metadata and tensor infos
    rng = random.Random(1)
    p = tmp_path / "flipped.gguf"
    for _ in range(300):
        flipped = bytearray(data)
        pos = rng.randrange(4, first_tensor + 80)
        flipped[pos] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(flipped))
        t0 = time.perf_counter()
        try:
            f = GGUFFile(os.fspath(p))
        except ValueError as e:
            assert os.fspath(p) in str(e), str(e)
        else:
            for t in f.tensors.values():  # parsed: every view lies inside the file
                np.asarray(t.data).sum()
        assert time.perf_counter() - t0 < 1.0
