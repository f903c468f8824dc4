"""``jaxllm convert SRC OUT_DIR``: a HF checkpoint (folder, hub id or GGUF file) converted once into an Orbax
checkpoint of jaxllm's parameters (``jaxllm.weights.orbax_checkpoint``), optionally in another dtype or quantized,
which ``LLM(model=OUT_DIR)`` and ``load_model(OUT_DIR)`` then read directly."""

from __future__ import annotations

import os
import time

from jaxllm.model_source import hf_config_dict, model_config, resolve_model_path


def convert_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike, *, dtype="auto",
                       quantization: str | None = None, tensor_parallel_size: int = 1,
                       revision: str | None = None) -> float:
    """Write the Orbax checkpoint of ``src`` to ``out_dir`` (which must not exist or be empty); returns the
    seconds it took. ``quantization``: "int8" / "fp8" quantize at conversion, as ``LLM(quantization=...)`` does at
    load; AWQ / GPTQ / fp8 checkpoints keep their own. ``tensor_parallel_size`` only spreads the work and memory
    of the conversion: the checkpoint loads at any size."""
    from jaxllm.parallel.sharding import make_mesh
    from jaxllm.weights.orbax_checkpoint import save_converted

    t0 = time.perf_counter()
    path = resolve_model_path(src, revision)
    cfg = model_config(path, dtype, quantization)
    save_converted(path, os.fspath(out_dir), cfg, make_mesh(tensor_parallel_size), hf_config=hf_config_dict(path))
    return time.perf_counter() - t0
