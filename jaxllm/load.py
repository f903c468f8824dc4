"""``jaxllm.load_model``: the research API (a Flax NNX module you can call on token ids)."""

from __future__ import annotations

import os

from jaxllm.model_source import model_config, resolve_model_path
from jaxllm.parallel.sharding import make_mesh

LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")


def load_model(path: str | os.PathLike, dtype="auto", *, tensor_parallel_size: int = 1, load_format: str = "auto",
               revision: str | None = None, seed: int = 0, quantization: str | None = None,
               enable_expert_parallel: bool = False):
    """Load a HF checkpoint folder, GGUF file or hub id into the NNX model.

    ``model(ids)`` with int32 ids [B, T] returns float32 logits [B, T, vocab] (causal, no cache).
    dtype: "auto" (the checkpoint's), "float32", "bfloat16" or "float16".
    load_format="dummy" gives random weights of the real shapes (benchmarks).
    quantization: None (the checkpoint's own ``quantization_config``, if any), "int8" or "fp8" (the decoder layers'
    linear weights quantized at load time, weight-only, per output channel; see ``jaxllm.models.quant``), or
    "awq" / "gptq" (4-bit checkpoints in those formats; ``jaxllm.models.quant_int4``).
    enable_expert_parallel: a MoE model's experts split whole over the devices (else each expert's ffn dim)."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format={load_format!r} is not supported; choose one of {LOAD_FORMATS}")
    local = resolve_model_path(path, revision)
    cfg = model_config(local, dtype, quantization, enable_expert_parallel=enable_expert_parallel)
    mesh = make_mesh(tensor_parallel_size)
    from jaxllm.weights.loader import build_dummy_model, load_weights

    if load_format == "dummy":
        return build_dummy_model(cfg, mesh, seed)
    return load_weights(local, cfg, mesh)
