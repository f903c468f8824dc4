"""A minimal, fast GGUF (v2/v3, little-endian) container reader: metadata dict + memory-mapped tensor views.

``gguf.GGUFReader`` builds a numpy view for every metadata element; on SmolLM2's 98k vocabulary strings and
merges that costs 3-10 s per open. Here strings are decoded straight from the memory map (~0.1 s), numeric
arrays with one ``np.frombuffer``. Dequantization itself still uses ``gguf.quants`` (see ``gguf.py``).

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic "GGUF", u32 version, u64 tensor
count, u64 metadata count; metadata as (string key, u32 type, value); tensor infos as (string name, u32 n_dims,
u64 dims innermost-first, u32 ggml type, u64 offset); tensor data after padding to ``general.alignment``.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# GGUF metadata value types -> struct format (scalars) / numpy dtype (arrays).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
       12: "<f8"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor: ``shape`` in HF order (outermost first); ``data`` a read-only view of the file:
    float32/float16 values shaped ``shape`` for F32/F16, else uint8 bytes shaped [*shape[:-1], row_bytes]
    (the layout ``gguf.quants.dequantize`` expects)."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    data: np.ndarray


class GGUFFile:
    """``metadata``: key -> str/int/float/bool/list; ``tensors``: name -> GGUFTensorInfo (file order)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            if not f.read(4):
                raise ValueError(f"{path!r} is not a GGUF file (it is empty)")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, OverflowError, MemoryError, ZeroDivisionError, TypeError, IndexError,
                ValueError) as e:
            if isinstance(e, ValueError) and repr(path) in str(e):
                raise  # ours: already names the file and the problem
            raise ValueError(f"GGUF file {path!r} is truncated or corrupted: {type(e).__name__}: {e}") from None

    def _parse(self) -> None:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        path, mm = self.path, self._mm
        if mm[:4] != b"GGUF":
            raise ValueError(f"{path!r} is not a GGUF file (missing the 'GGUF' magic bytes)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} of {path!r} is not supported (supported: 2, 3; "
                             "big-endian files are not supported)")
        # every metadata entry takes >= 12 bytes and every tensor info >= 24: larger counts are corruption
        if n_kv * 12 + n_tensors * 24 > len(mm):
            raise ValueError(f"GGUF file {path!r} is truncated or corrupted: it claims {n_tensors} tensors and "
                             f"{n_kv} metadata entries in {len(mm)} bytes")
        self._pos = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            self.metadata[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            if n_dims > _MAX_DIMS:
                raise ValueError(f"GGUF tensor {name!r} in {path!r} has {n_dims} dimensions (at most "
                                 f"{_MAX_DIMS}): the file is corrupted")
            dims = self._unpack(f"<{n_dims}Q")
            type_id, offset = self._unpack("<IQ")
            infos.append((name, dims, type_id, offset))
        align = int(self.metadata.get("general.alignment", 32))
        data_start = -(-self._pos // align) * align
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, dims, type_id, offset in infos:
            try:
                qtype = GGMLQuantizationType(type_id)
            except ValueError:
                raise ValueError(f"GGUF tensor {name!r} has unknown ggml type id {type_id}") from None
            shape = tuple(int(d) for d in reversed(dims))
            n_elems = int(np.prod(shape)) if shape else 1
            block, type_size = GGML_QUANT_SIZES[qtype]
            start = data_start + offset
            n_bytes = n_elems // block * type_size
            if n_elems % block or start + n_bytes > len(mm):
                raise ValueError(f"GGUF tensor {name!r} (shape {shape}, {qtype.name}) in {path!r} does not fit "
                                 f"in the file ({len(mm)} bytes, data at {start}): truncated or corrupted")
            if qtype.name in ("F32", "F16"):
                data = np.frombuffer(mm, "<f4" if qtype.name == "F32" else "<f2", n_elems, start).reshape(shape)
            else:
                row_bytes = shape[-1] // block * type_size
                data = np.frombuffer(mm, np.uint8, n_bytes, start)
                data = data.reshape(*shape[:-1], row_bytes)
            self.tensors[name] = GGUFTensorInfo(name, qtype.name, shape, data)

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self._mm, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self._mm, self._pos)
        start = self._pos + 8
        if start + n > len(self._mm):
            raise ValueError(f"GGUF file {self.path!r} is truncated or corrupted: a string of {n} bytes at "
                             f"offset {start} runs past the end of the file ({len(self._mm)} bytes)")
        self._pos = start + n
        return self._mm[start:start + n].decode("utf-8", errors="replace")

    def _value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            sub, n = self._unpack("<IQ")
            if n > len(self._mm) - self._pos:  # every element takes at least one byte
                raise ValueError(f"GGUF file {self.path!r} is truncated or corrupted: an array of {n} elements "
                                 f"at offset {self._pos} cannot fit in {len(self._mm)} bytes")
            if sub == _STRING:
                return [self._string() for _ in range(n)]
            if sub in _NP:
                arr = np.frombuffer(self._mm, _NP[sub], n, self._pos)
                self._pos += arr.nbytes
                return arr.astype(bool).tolist() if sub == 7 else arr.tolist()
            return [self._value(sub) for _ in range(n)]  # nested arrays
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF metadata value type {vtype} in {self.path!r}")
        (value,) = self._unpack(_SCALARS[vtype])
        return value
