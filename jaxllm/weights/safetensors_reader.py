"""Zero-copy safetensors reading with numpy memmaps.

We parse the (tiny) header ourselves and view each tensor's bytes in the memory-mapped file, so a tensor
can be sliced shard by shard without ever materialising the whole file (or even the whole tensor) in
host memory. bfloat16 is supported through ``ml_dtypes`` (a jax dependency).

Pages of a mapping that were read count in the process's resident memory until they are unmapped, so a
loader that keeps a 5 GB shard file mapped holds 5 GB of it resident. ``iter_checkpoint`` therefore drops each
tensor's pages (``madvise(MADV_DONTNEED)``) once the consumer has moved on: a later read of the same view just
faults them back in from the page cache, since the mapping is read-only (measured on the CPU with Llama-8B
tensor shapes in 4 GiB files: the loader's host overhead is 2.3 GiB with it, about one file without).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
}


class SafetensorsFile:
    """One ``.safetensors`` file: ``names()``, ``shape(name)``, ``tensor(name)`` (a read-only memmap view)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + header_len
        self._mmap = None

    def names(self) -> list[str]:
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._header[name]["shape"])

    def tensor(self, name: str) -> np.ndarray:
        info = self._header[name]
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"tensor {name!r} in {self.path} has unsupported dtype {info['dtype']}")
        if self._mmap is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        start, end = info["data_offsets"]
        raw = np.frombuffer(self._mmap, np.uint8, end - start, self._data_start + start)
        return raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])

    def release(self, name: str) -> None:
        """Drop the resident pages of ``name`` (its views stay valid: they fault back in from the page cache)."""
        if self._mmap is None or not hasattr(self._mmap, "madvise"):
            return
        start, end = self._header[name]["data_offsets"]
        page = mmap.PAGESIZE
        lo = (self._data_start + start) // page * page
        hi = min(len(self._mmap), self._data_start + end)
        if hi > lo:
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def checkpoint_files(folder: str | os.PathLike) -> list[str]:
    """The safetensors files of a HF checkpoint folder: the index's shards, or the single file."""
    folder = os.fspath(folder)
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [x for x in files if not os.path.isfile(os.path.join(folder, x))]
        if missing:
            raise FileNotFoundError(f"{index} names shard files that do not exist: {missing}")
        return [os.path.join(folder, x) for x in files]
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    found = sorted(x for x in os.listdir(folder) if x.endswith(".safetensors"))
    if found:
        return [os.path.join(folder, x) for x in found]
    raise FileNotFoundError(f"no safetensors weights (model.safetensors or model.safetensors.index.json) in "
                            f"{folder!r}")


def iter_checkpoint(folder: str | os.PathLike) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield (name, memmap view, file path) for every tensor of every file, one at a time; a tensor's pages
    are released from resident memory when the next one is asked for."""
    for path in checkpoint_files(folder):
        st = SafetensorsFile(path)
        for name in st.names():
            yield name, st.tensor(name), path
            st.release(name)
