"""Host memory for the KV cache's host tier (``swap_space``), checked before anything loads.

Two limits bound ``swap_space``: the host memory free now (``/proc/meminfo``'s MemAvailable, else
``os.sysconf``; no dependency), and on GPUs XLA's pinned host allocator, where the tier's slots live. That
allocator is one pool per process, sized when JAX starts its GPU backend from ``XLA_PJRT_GPU_HOST_MEMORY_LIMIT_GB``
(64 GiB unset; read by ``jaxllm.envs``): a tier larger than the pool would fail on its first swap, deep inside a
step, so it is refused at start-up instead, naming the variable that raises the pool.
"""

from __future__ import annotations

import math
import os
from typing import Any

from jaxllm import envs
from jaxllm.engine_args_checks import check_bool, check_choice

DEFAULT_SWAP_SPACE = 4  # GiB (vLLM's)


def available_host_bytes() -> int | None:
    """MemAvailable (what can be allocated without swapping), else the free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_host_tier(args: Any) -> None:
    """Validate (and default) ``args.swap_space``, ``preemption_mode`` and ``host_prefix_cache`` of an
    ``EngineArgs``: None becomes vLLM's 4 GiB, or half the free host memory when that is less; more than the
    free host memory is a ValueError."""
    swap = args.swap_space
    available = available_host_bytes()
    if swap is None:
        swap = args.swap_space = DEFAULT_SWAP_SPACE if available is None else min(
            DEFAULT_SWAP_SPACE, available / 2 / 2**30)
    if isinstance(swap, bool) or not isinstance(swap, (int, float)) or not swap >= 0:
        raise ValueError(f"swap_space={swap!r}: give the GiB of host memory for KV blocks (a number >= 0)")
    if available is not None and swap * 2**30 > available:
        raise ValueError(f"swap_space={swap!r} GiB is more than the free host memory "
                         f"({available / 2**30:.1f} GiB available)")
    check_choice("preemption_mode", args.preemption_mode, (None, "recompute", "swap"))
    check_bool("host_prefix_cache", args.host_prefix_cache)
    if args.preemption_mode == "swap" and not swap:
        raise ValueError("preemption_mode='swap' needs swap_space > 0 (the host memory blocks are swapped to)")
    if args.host_prefix_cache and not (swap and args.enable_prefix_caching):
        raise ValueError("host_prefix_cache=True needs swap_space > 0 and enable_prefix_caching=True")


def check_pinned_host_limit(args: Any, platform: str, replicas_per_process: int) -> None:
    """On a GPU, refuse host tiers larger than XLA's pinned host pool (``envs.gpu_pinned_host_limit_gib``):
    each of this process's ``replicas_per_process`` engine replicas has its own ``swap_space`` GiB tier, all
    in the one pool. No tier is made (and nothing is checked) with ``swap_space=0``, or with
    ``preemption_mode="recompute"`` and no host prefix cache."""
    if platform != "gpu" or not args.swap_space:
        return
    if args.preemption_mode == "recompute" and not args.host_prefix_cache:
        return
    limit = envs.gpu_pinned_host_limit_gib()
    total = args.swap_space * replicas_per_process
    if total <= limit:
        return
    what = f"swap_space={args.swap_space!r} GiB"
    if replicas_per_process > 1:
        what += (f" for each of {replicas_per_process} data-parallel replicas ({total:g} GiB of pinned host memory "
                 "in this process)")
    raise ValueError(f"{what} is more than XLA's pinned host memory limit of {limit} GiB "
                     f"({envs.GPU_HOST_MEMORY_LIMIT_VAR}); set {envs.GPU_HOST_MEMORY_LIMIT_VAR}="
                     f"{math.ceil(total)} (or more) before the process starts JAX, or lower swap_space")
