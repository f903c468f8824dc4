"""EngineArgs: the engine knobs a vLLM user passes to ``LLM(**kwargs)``, validated before anything loads."""

from __future__ import annotations

import dataclasses
from typing import Any

LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")
# "auto" = the model's dtype; the fp8 ones store the paged KV cache in float8 ("fp8" = e4m3, as vLLM),
# per-layer scales 1.0 (jaxllm.ops.paged_attention.kv_cache: the same names, mapped to dtypes).
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
_GPU_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192}
# The CPU is for tests and notebooks: fewer, smaller buckets keep start-up compiles short.
_CPU_DEFAULTS = {"max_num_seqs": 16, "max_num_batched_tokens": 256}


@dataclasses.dataclass
class EngineArgs:
    """Engine keyword arguments of ``LLM`` (vLLM names). ``None`` means "derive a default"."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    num_gpu_blocks_override: int | None = None
    kv_cache_memory_bytes: int | None = None
    load_format: str = "auto"
    kv_cache_dtype: str = "auto"  # one of KV_CACHE_DTYPES
    # Schedule step N+1 while step N runs on the device (same outputs; see jaxllm/engine/scheduler.py).
    async_scheduling: bool = True
    # MoE models: whole experts per device instead of a slice of every expert (jaxllm.models.moe)
    enable_expert_parallel: bool = False

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "EngineArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"LLM() got unexpected keyword argument(s): {', '.join(unknown)}; supported engine "
                            f"arguments: {', '.join(sorted(names))}")
        args = cls(**kwargs)
        args.validate()
        return args

    def validate(self) -> None:
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks_override",
                     "kv_cache_memory_bytes"):
            _positive_int(name, getattr(self, name), optional=True)
        _positive_int("block_size", self.block_size)
        if self.block_size not in (8, 16, 32, 64, 128, 256):
            raise ValueError(f"block_size={self.block_size} is not supported; choose one of 8, 16, 32, 64, 128, 256")
        for name in ("enable_prefix_caching", "async_scheduling", "enable_expert_parallel"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype={self.kv_cache_dtype!r} is not supported; choose one of "
                             f"{KV_CACHE_DTYPES} ('auto' = the model's dtype, 'fp8' = 'fp8_e4m3')")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format={self.load_format!r} is not supported; choose one of {LOAD_FORMATS}")

    def resolve(self, platform: str, max_position_embeddings: int) -> "EngineArgs":
        """Fill the defaults that depend on the device and the model."""
        defaults = _CPU_DEFAULTS if platform == "cpu" else _GPU_DEFAULTS
        out = dataclasses.replace(self)
        out.max_model_len = self.max_model_len or max_position_embeddings
        out.max_num_seqs = self.max_num_seqs or defaults["max_num_seqs"]
        out.max_num_batched_tokens = self.max_num_batched_tokens or max(defaults["max_num_batched_tokens"],
                                                                        out.max_num_seqs)
        if out.max_num_batched_tokens < out.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({out.max_num_batched_tokens}) must be greater than or "
                             f"equal to max_num_seqs ({out.max_num_seqs})")
        return out


def _positive_int(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
