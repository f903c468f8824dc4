"""The ``EngineArgs`` defaults that depend on the device and the model, filled in once both are known.

``EngineArgs.validate`` runs before anything is located or loaded; these defaults need the platform (GPU
budgets differ from the CPU's) and the model's context length, so ``LLM`` resolves them after reading the
config and before building the model. The host tier's pinned-memory check is here too: its limit exists only
on GPUs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxllm.host_memory import check_pinned_host_limit

_GPU_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192}
# The CPU is for tests and notebooks: fewer, smaller buckets keep start-up compiles short.
_CPU_DEFAULTS = {"max_num_seqs": 16, "max_num_batched_tokens": 256}
# With background_compile (and no max_seq_len_to_capture), start-up on the CPU compiles the buckets up to this many
# tokens (a short prompt's prefill and decode); the rest follow in the background. A GPU compiles the buckets every
# step fits instead (jaxllm/runner/startup_programs.py).
BACKGROUND_STARTUP_TOKENS = 8
# Pooling models on GPUs batch more tokens a step by default, as vLLM (POOLING_MODEL_MAX_NUM_BATCHED_TOKENS):
# their requests are prefill only, so a step's latency delays no decode and larger steps raise throughput.
POOLING_MAX_NUM_BATCHED_TOKENS = 32768


def resolve_args(args: Any, platform: str, model_max_len: int, pooling: bool = False, num_processes: int = 1):
    """A copy of ``args`` (an ``EngineArgs``) with the device and model defaults filled in. ``platform``: JAX's
    ("cpu", "gpu"); ``model_max_len``: the model's context (``derived_max_model_len``), a larger
    ``max_model_len`` is refused unless ``allow_long_max_model_len``, as vLLM refuses it unless
    VLLM_ALLOW_LONG_MAX_MODEL_LEN is set. ``pooling``: a pooling model's defaults
    (``POOLING_MAX_NUM_BATCHED_TOKENS`` on GPUs). ``num_processes``: JAX processes sharing the
    ``data_parallel_size`` replicas (each process's replicas share its pinned host memory)."""
    defaults = _CPU_DEFAULTS if platform == "cpu" else _GPU_DEFAULTS
    if pooling and platform != "cpu":
        defaults = {**defaults, "max_num_batched_tokens": POOLING_MAX_NUM_BATCHED_TOKENS}
    check_pinned_host_limit(args, platform, -(-args.data_parallel_size // num_processes))
    out = dataclasses.replace(args)
    if args.max_model_len is not None and args.max_model_len > model_max_len and not args.allow_long_max_model_len:
        raise ValueError(f"max_model_len={args.max_model_len} is greater than the model's context "
                         f"({model_max_len}: max_position_embeddings with its rope scaling); positions past it "
                         "were never trained. Pass allow_long_max_model_len=True (or set "
                         "JAXLLM_ALLOW_LONG_MAX_MODEL_LEN=1) to use it anyway")
    out.max_model_len = args.max_model_len or model_max_len
    out.max_num_seqs = args.max_num_seqs or defaults["max_num_seqs"]
    if args.background_compile is None:  # on GPUs opt-in: its throughput and memory effects are not measured yet
        out.background_compile = platform == "cpu"
    out.max_num_batched_tokens = args.max_num_batched_tokens or max(defaults["max_num_batched_tokens"],
                                                                    out.max_num_seqs)
    if out.max_num_batched_tokens < out.max_num_seqs:
        raise ValueError(f"max_num_batched_tokens ({out.max_num_batched_tokens}) must be greater than or "
                         f"equal to max_num_seqs ({out.max_num_seqs})")
    return out


def derived_max_model_len(cfg) -> int:
    """The model's context length as vLLM derives it: max_position_embeddings, times the rope scaling factor for
    the linear and dynamic types (their configs keep the original length; llama3 and longrope configs already
    state the long one); yarn: its original_max_position_embeddings times its factor."""
    length = cfg.max_position_embeddings
    if cfg.rope.rope_type in ("linear", "dynamic"):
        length = int(length * float(cfg.rope.get("factor", 1.0)))
    elif cfg.rope.rope_type == "yarn":
        length = int(cfg.rope.get("original_max_position_embeddings") * float(cfg.rope.get("factor")))
    return length
