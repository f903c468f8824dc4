"""Environment variables: the one module of jaxllm that reads (or writes) ``os.environ`` (vLLM's ``envs.py``).

Each ``JAXLLM_*`` variable is the documented override of one ``LLM`` keyword (``ENV_VARS``): when the keyword
is not given, ``jaxllm.engine_args.EngineArgs`` takes the variable's value; an explicit keyword wins. The
variables are read when an ``LLM`` is built, never while a program is traced, so a choice cannot change
between two compiles of one engine. A test (tests/test_settings.py) fails when any other module reads the
environment. docs/settings.md has the full table.
"""

from __future__ import annotations

import os

# variable -> the EngineArgs keyword whose default it sets
ENV_VARS = {
    "JAXLLM_ATTENTION_IMPL": "attention_backend",
    "JAXLLM_QUANT_MATMUL_IMPL": "quant_matmul_impl",
    "JAXLLM_INT4_KERNEL_VARIANT": "int4_kernel_variant",
    "JAXLLM_MOE_MATMUL_IMPL": "moe_matmul_impl",
    "JAXLLM_FP8_ACTIVATIONS": "fp8_activations",
    "JAXLLM_PA_FP8_DOT": "attention_fp8_dot",
    "JAXLLM_PA_DECODE_SPLITS": "attention_decode_splits",
    "JAXLLM_LOAD_INFLIGHT_BYTES": "load_inflight_bytes",
    "JAXLLM_CACHE_DIR": "compilation_cache_dir",
    "JAXLLM_GGUF_CACHE_DIR": "gguf_cache_dir",
    "JAXLLM_ALLOW_LONG_MAX_MODEL_LEN": "allow_long_max_model_len",
}
KEYWORD_ENV = {keyword: var for var, keyword in ENV_VARS.items()}

# JAX's allocator reads this when its GPU backend starts: the share of device memory it may hand out.
JAX_MEM_FRACTION_VAR = "XLA_PYTHON_CLIENT_MEM_FRACTION"
JAX_DEFAULT_MEM_FRACTION = 0.75
# XLA's GPU client reads these when it starts: its pinned host allocator (one pool per process, where the KV
# cache's host tier lives) holds at most LIMIT GiB; unset, 64, or 16 when PREALLOCATE makes it reserve the pool.
GPU_HOST_MEMORY_LIMIT_VAR = "XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB"
GPU_HOST_MEMORY_PREALLOCATE_VAR = "XLA_PJRT_GPU_HOST_MEMORY_PREALLOCATE"


def keyword_default(keyword: str) -> str | None:
    """The raw value of the variable that overrides ``keyword`` (None when unset or empty)."""
    return get(KEYWORD_ENV[keyword])


def get(name: str) -> str | None:
    """``$name``, None when unset or empty."""
    value = os.environ.get(name)
    return value if value else None


def xla_flags() -> str:
    """``$XLA_FLAGS`` ("" when unset): the user's XLA options, which win over the engine's compile options."""
    return os.environ.get("XLA_FLAGS", "")


def jax_memory_fraction() -> float:
    """The fraction of device memory JAX's allocator hands out (``$XLA_PYTHON_CLIENT_MEM_FRACTION``, else JAX's
    default 0.75)."""
    raw = get(JAX_MEM_FRACTION_VAR)
    try:
        return float(raw) if raw is not None else JAX_DEFAULT_MEM_FRACTION
    except ValueError:
        raise ValueError(f"{JAX_MEM_FRACTION_VAR}={raw!r} is not a fraction") from None


def gpu_pinned_host_limit_gib() -> int:
    """The GiB of pinned host memory XLA's GPU client may allocate (``$XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB``, else
    XLA's default: 64, or 16 with ``$XLA_PJRT_GPU_HOST_MEMORY_PREALLOCATE`` true). A value XLA cannot parse is a
    ValueError (XLA would log it and use its default)."""
    preallocate = (get(GPU_HOST_MEMORY_PREALLOCATE_VAR) or "").strip().lower() in ("1", "true")
    raw = get(GPU_HOST_MEMORY_LIMIT_VAR)
    if raw is None:
        return 16 if preallocate else 64
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{GPU_HOST_MEMORY_LIMIT_VAR}={raw!r} is not a whole number of GiB") from None


def request_jax_memory_fraction(fraction: float) -> bool:
    """Set ``$XLA_PYTHON_CLIENT_MEM_FRACTION`` to ``fraction`` unless the user set it; True when set. It only
    has an effect before JAX starts its GPU backend (the caller checks that)."""
    if get(JAX_MEM_FRACTION_VAR) is not None:
        return False
    os.environ[JAX_MEM_FRACTION_VAR] = f"{fraction:.4f}"
    return True


def quiet_transformers() -> None:
    """Silence transformers' advisory warnings (the command line prints only results), unless the user chose."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
