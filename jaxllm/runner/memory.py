"""Sizing the paged KV cache from device memory.

GPU: the budget is ``gpu_memory_utilization`` x device memory, minus what is already in use (the weights)
and a reserve for the step's activations (estimated from the largest bucket; the compiled step's measured
temp size is logged after warm-up). JAX's allocator only hands out ``XLA_PYTHON_CLIENT_MEM_FRACTION`` of the
device (75% by default): ``request_memory_fraction`` raises it to the user's fraction when the GPU backend
has not started yet, so the fraction asked for is the fraction used.
CPU: there is no device memory to measure; the cache gets what ``max_num_seqs`` sequences of
``max_model_len`` tokens need, capped at ``CPU_KV_CACHE_BYTES``.
"""

from __future__ import annotations

import logging
import os

from jaxllm import envs
from jaxllm.config import ModelConfig

logger = logging.getLogger("jaxllm")

CPU_KV_CACHE_BYTES = 1 << 30
GPU_SLACK_BYTES = 512 << 20


def request_memory_fraction(gpu_memory_utilization: float) -> None:
    """Set XLA_PYTHON_CLIENT_MEM_FRACTION before the first GPU allocation (no effect once jax has started a
    GPU backend, or when the user set the variable)."""
    from jax._src import xla_bridge

    if getattr(xla_bridge, "_backends", None):
        return  # backends already initialised: the allocator's limit is fixed
    envs.request_jax_memory_fraction(gpu_memory_utilization)


def check_weights_fit(variables: dict, devices) -> None:
    """Refuse, before anything is allocated, a model whose weights cannot fit: their bytes split evenly over
    ``devices`` (a lower bound of any device's share) against one device's memory (the allocator's limit on a GPU,
    physical memory on the CPU). ``variables``: {path: abstract Variable} of ``nnx.eval_shape``."""
    _refuse_weights(sum(v.get_value().size * v.get_value().dtype.itemsize for v in variables.values()), devices)


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def check_config_fits(cfg: ModelConfig, devices) -> None:
    """``check_weights_fit`` from the config alone, before the abstract model is built (``nnx.eval_shape`` of a
    corrupted config's thousands of wide layers takes minutes): a lower bound of the weights' bytes, every
    parameter at its smallest storage (half a byte with int4 checkpoints, one with int8 / fp8)."""
    per_param = {"awq": 0.5, "gptq": 0.5, "int8": 1, "fp8": 1}.get(cfg.quantization, _DTYPE_BYTES.get(cfg.dtype, 1))
    _refuse_weights(int(cfg.num_params() * per_param), devices)


def _refuse_weights(total: int, devices) -> None:
    device = devices[0]
    per_device = total // len(devices)
    capacity = _device_capacity(device)
    if capacity and per_device > capacity:
        raise ValueError(f"the model's weights need {total / 2**30:.1f} GiB ({per_device / 2**30:.1f} GiB on each "
                         f"of {len(devices)} device(s)) but a {device.platform} device has "
                         f"{capacity / 2**30:.1f} GiB: use more devices (tensor_parallel_size), quantization or a "
                         "smaller model")


def _device_capacity(device) -> int | None:
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return (device.memory_stats() or {}).get("bytes_limit")


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype_bytes: int, tp: int = 1) -> int:
    """Bytes of one block (all layers, K and V) on one device. ``dtype_bytes``: bytes per element of the cache's
    storage dtype, not the model's (1 with kv_cache_dtype="fp8": the same budget holds 2x the blocks of bf16;
    ``jaxllm.ops.paged_attention.resolve_kv_cache_dtype`` maps the name to the dtype)."""
    kv_heads_per_device = max(1, cfg.num_kv_heads // tp)  # one slot per device when tp > kv heads
    return cfg.num_layers * 2 * block_size * kv_heads_per_device * cfg.head_dim * dtype_bytes


def activation_reserve_bytes(cfg: ModelConfig, max_tokens: int, max_seqs: int, tp: int = 1) -> int:
    """Conservative estimate of the step's peak temporaries on one device: live per-token activations (in fp32
    terms, twice over; the residual stream is replicated under tensor parallelism, only the head and MLP parts
    are split), the sampler's S x V float32 work arrays, and a slack. Under TP the slack is larger: at TP=4 with
    Llama-8B dims the GPU autotuner ran out of memory compiling with the smaller one."""
    per_token = 4 * cfg.hidden_size + (2 * (cfg.num_heads + cfg.num_kv_heads) * cfg.head_dim
                                       + 3 * cfg.intermediate_size) // tp
    slack = GPU_SLACK_BYTES if tp == 1 else 4 * GPU_SLACK_BYTES
    return 2 * max_tokens * per_token * 4 + 4 * max_seqs * cfg.vocab_size * 4 + slack


def plan_num_blocks(cfg: ModelConfig, *, device, block_size: int, dtype_bytes: int, max_num_seqs: int,
                    max_num_batched_tokens: int, max_model_len: int, gpu_memory_utilization: float,
                    num_gpu_blocks_override: int | None, kv_cache_memory_bytes: int | None, tp: int = 1) -> int:
    """Number of KV blocks to allocate (per device, all layers)."""
    per_block = kv_bytes_per_block(cfg, block_size, dtype_bytes, tp)
    capacity = _device_capacity(device)
    if num_gpu_blocks_override is not None:
        if capacity and num_gpu_blocks_override * per_block > capacity:
            raise ValueError(f"num_gpu_blocks_override={num_gpu_blocks_override} needs "
                             f"{num_gpu_blocks_override * per_block / 2**30:.1f} GiB of KV cache but a "
                             f"{device.platform} device has {capacity / 2**30:.1f} GiB")
        return int(num_gpu_blocks_override)
    if kv_cache_memory_bytes is not None:
        if capacity and kv_cache_memory_bytes > capacity:
            raise ValueError(f"kv_cache_memory_bytes={kv_cache_memory_bytes} is more than a {device.platform} "
                             f"device has ({capacity} bytes)")
        budget = int(kv_cache_memory_bytes)
    elif device.platform == "cpu":
        needed = max_num_seqs * -(-max_model_len // block_size) * per_block
        budget = min(needed, CPU_KV_CACHE_BYTES)
    else:
        budget = _gpu_budget(device, gpu_memory_utilization) - activation_reserve_bytes(
            cfg, max_num_batched_tokens, max_num_seqs, tp)
    num_blocks = budget // per_block
    if num_blocks < 1:
        raise ValueError(f"no memory left for the KV cache (budget {budget / 2**30:.2f} GiB, one block needs "
                         f"{per_block / 2**20:.2f} MiB): raise gpu_memory_utilization or kv_cache_memory_bytes, "
                         f"or lower max_num_batched_tokens / max_num_seqs")
    return int(num_blocks)


def _gpu_budget(device, gpu_memory_utilization: float) -> int:
    stats = device.memory_stats() or {}
    limit, in_use = stats.get("bytes_limit"), stats.get("bytes_in_use", 0)
    if not limit:
        raise RuntimeError(f"{device} reports no memory limit; pass kv_cache_memory_bytes or num_gpu_blocks_override")
    fraction = envs.jax_memory_fraction()
    total = limit / fraction
    target = gpu_memory_utilization * total
    if target > limit * 1.001:
        logger.warning("gpu_memory_utilization=%.2f asks for %.1f GiB but JAX's allocator is capped at %.1f GiB "
                       "(XLA_PYTHON_CLIENT_MEM_FRACTION=%.2f; the GPU backend started before LLM was built)",
                       gpu_memory_utilization, target / 2**30, limit / 2**30, fraction)
        target = limit
    return int(target - in_use)
