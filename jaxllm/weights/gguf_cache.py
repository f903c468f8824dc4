"""A cache of a GGUF file's dequantized tensors (``LLM(gguf_cache_dir=...)``, default ~/.cache/jaxllm/gguf).

Dequantizing the default model's Q4_1 / Q8_0 blocks with numpy takes about a second on two CPU cores, every
start-up. The first load writes each float32 tensor (HF layout, as ``GGUFCheckpoint.tensors`` yields it) to one
file as it goes by; later loads memory-map that file, so the tensors come from the page cache. An entry is keyed
by the GGUF's absolute path, size and modification time (a replaced file gets a new entry) and is complete only
once its ``index.json`` exists (written last, atomically), so an interrupted first load leaves nothing that a later
one would read. Files whose dequantized tensors exceed ``MAX_CACHED_BYTES`` are not cached (a 7B GGUF would take
28 GB of disk in float32): the cache is for the small models that run on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator

import numpy as np

logger = logging.getLogger("jaxllm")

MAX_CACHED_BYTES = 4 << 30
_INDEX, _DATA = "index.json", "tensors.f32"


def entry_dir(gguf_path: str, cache_dir: str) -> str:
    """The cache folder of one GGUF file (its path, size and mtime hashed)."""
    st = os.stat(gguf_path)
    key = f"{os.path.abspath(gguf_path)}|{st.st_size}|{st.st_mtime_ns}"
    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    return os.path.join(cache_dir, f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def cached_tensors(ckpt, cache_dir: str | None) -> Iterator[tuple[str, np.ndarray]]:
    """``ckpt.tensors()`` (a ``GGUFCheckpoint``'s (HF name, float32 array) pairs), from the cache when the file
    has an entry there, else dequantized and written through to a new entry. ``cache_dir`` None or "": no cache."""
    if not cache_dir or _dequantized_bytes(ckpt) > MAX_CACHED_BYTES:
        yield from ckpt.tensors()
        return
    folder = entry_dir(ckpt.path, cache_dir)
    index = _read_index(folder)
    if index is not None:
        data = np.memmap(os.path.join(folder, _DATA), np.float32, mode="r")
        for name, offset, shape in index:
            yield name, data[offset:offset + math.prod(shape)].reshape(shape)
        return
    yield from _write_through(ckpt, folder)


def _dequantized_bytes(ckpt) -> int:
    return sum(4 * math.prod(t.shape) for t in ckpt._tensors.values())


def _read_index(folder: str) -> list | None:
    try:
        with open(os.path.join(folder, _INDEX)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_through(ckpt, folder: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``ckpt.tensors()`` and append each to the entry's data file; publish the index at the end. A cache
    folder that cannot be written is skipped with a warning (the load goes on)."""
    tmp = os.path.join(folder, f"{_DATA}.{os.getpid()}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        out = open(tmp, "wb")  # noqa: SIM115 - closed below, the generator may stop at any yield
    except OSError as e:
        logger.warning("GGUF cache %s is not writable (%s): dequantizing without it", folder, e)
        yield from ckpt.tensors()
        return
    index, offset, done, writing = [], 0, False, True
    try:
        for name, array in ckpt.tensors():
            if writing:
                flat = np.ascontiguousarray(array, np.float32)
                try:
                    out.write(flat.tobytes())
                except OSError as e:  # e.g. a full disk: the load goes on without the cache
                    logger.warning("could not write the GGUF cache entry %s (%s)", folder, e)
                    writing = False
                index.append((name, offset, list(flat.shape)))
                offset += flat.size
            yield name, array
        done = writing
    finally:
        out.close()
        if done:
            _publish(folder, tmp, index)
        else:
            _remove(tmp)


def _publish(folder: str, tmp: str, index: list) -> None:
    try:
        os.replace(tmp, os.path.join(folder, _DATA))
        tmp_index = os.path.join(folder, f"{_INDEX}.{os.getpid()}.tmp")
        with open(tmp_index, "w") as f:
            json.dump(index, f)
        os.replace(tmp_index, os.path.join(folder, _INDEX))
    except OSError as e:
        logger.warning("could not write the GGUF cache entry %s (%s)", folder, e)
        _remove(tmp)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
