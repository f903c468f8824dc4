"""Corrupted checkpoints through ``LLM``: a truncated or header-corrupted shard of a real (tiny) checkpoint is a
ValueError naming the file, raised before any tensor is read."""

from __future__ import annotations

import json
import os
import struct
import time

import pytest
from hf_models import save_tiny_model

import jaxllm


@pytest.fixture
def checkpoint(tmp_path):
    save_tiny_model(tmp_path, "LlamaForCausalLM", max_shard_size="100KB")
    return tmp_path


def _shards(folder):
    return sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")


def _assert_names(folder, path, match):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match) as err:
        jaxllm.LLM(os.fspath(folder), skip_tokenizer_init=True, enforce_eager=True)
    assert os.fspath(path) in str(err.value)
    assert time.perf_counter() - t0 < 10


def test_truncated_shard(checkpoint):
    shard = _shards(checkpoint)[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    _assert_names(checkpoint, shard, "lies outside the file .* truncated or corrupted")


def test_shard_header_claims_more_than_the_file(checkpoint):
    shard = _shards(checkpoint)[0]
    data = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    _assert_names(checkpoint, shard, "corrupted or truncated")


def test_shard_entry_with_a_bad_dtype(checkpoint):
    shard = _shards(checkpoint)[0]
    data = shard.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["dtype"] = "Q99"
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    shard.write_bytes(data[:8] + raw + data[8 + n:])
    _assert_names(checkpoint, shard, "Q99")
