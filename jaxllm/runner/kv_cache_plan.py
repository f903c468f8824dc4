"""The paged KV cache's plan: how many blocks, their dtype and sharding, and the shrink after warm-up.

The programs are compiled against the cache's shapes before the cache exists (XLA's GPU autotuner needs device
memory while it compiles, memory the cache takes once it exists); ``shapes()`` gives those ShapeDtypeStructs and
``allocate()`` the zeroed arrays. When the cache fills the device (sized from ``gpu_memory_utilization``) and the
compiled programs need more temporaries than were reserved, ``shrink_to(measured)`` takes the difference (plus a
slack) from the cache.
"""

from __future__ import annotations

import concurrent.futures
import logging

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxllm import ops
from jaxllm.config import ModelConfig
from jaxllm.parallel.sharding import cache_kv_heads, logical_to_spec, sharding_rules
from jaxllm.runner.memory import (
    GPU_SLACK_BYTES,
    activation_reserve_bytes,
    kv_bytes_per_block,
    plan_num_blocks,
)

logger = logging.getLogger("jaxllm")


class KVCachePlan:
    """Blocks of ``block_size`` tokens for every layer (K and V), per device. ``args``: resolved EngineArgs."""

    def __init__(self, cfg: ModelConfig, mesh, args, model_dtype):
        tp = mesh.devices.size
        self.num_layers, self.block_size, self.head_dim = cfg.num_layers, args.block_size, cfg.head_dim
        self.dtype = ops.paged_attention.resolve_kv_cache_dtype(args.kv_cache_dtype, jnp.dtype(model_dtype))
        self.activation_reserve_bytes = activation_reserve_bytes(cfg, args.max_num_batched_tokens,
                                                                 args.max_num_seqs, tp)
        self.measured_activation_bytes: int | None = None  # XLA's temp size of the largest program (warm-up)
        self.num_blocks = plan_num_blocks(
            cfg, device=mesh.devices.flat[0], block_size=args.block_size, dtype_bytes=self.dtype.itemsize,
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
            num_gpu_blocks_override=args.num_gpu_blocks_override, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
            tp=tp)
        # the cache was sized from what device memory is left after the reserve: it shrinks if XLA needs more
        self.fills_device = (args.num_gpu_blocks_override is None and args.kv_cache_memory_bytes is None
                             and mesh.devices.flat[0].platform != "cpu")
        spec = logical_to_spec(("cache_kv", "cache_blocks", "cache_slots", "cache_heads", None),
                               sharding_rules(cfg, tp))
        self.sharding = NamedSharding(mesh, spec)
        self.kv_heads = cache_kv_heads(cfg.num_kv_heads, tp)
        self.bytes_per_block = kv_bytes_per_block(cfg, args.block_size, self.dtype.itemsize, tp)
        self._zeroing: tuple[int, concurrent.futures.Future] | None = None  # (num_blocks, its arrays): start_zeroing

    def shapes(self) -> list[jax.ShapeDtypeStruct]:
        """The cache of ``num_blocks`` blocks as ShapeDtypeStructs: what the programs are compiled against."""
        shape = ops.paged_attention.kv_cache_shape(self.num_blocks, self.block_size, self.kv_heads, self.head_dim)
        return [jax.ShapeDtypeStruct(shape, self.dtype, sharding=self.sharding) for _ in range(self.num_layers)]

    def allocate(self) -> list[jax.Array]:
        """Zeroed device arrays of ``shapes()`` (once the programs are compiled): those ``start_zeroing`` began
        when it did so for the current ``num_blocks``."""
        early, self._zeroing = self._zeroing, None
        if early is not None and early[0] == self.num_blocks:
            return early[1].result()
        return self._zeroed()

    def start_zeroing(self) -> None:
        """On the CPU, start zeroing the cache on a thread, to overlap the compilation of the programs (zeroing
        the CPU's 1 GiB cache takes 0.3-0.6 s on two cores, mostly page faults, without the GIL). Only there: the
        CPU cache never shrinks to the programs' temporaries, and no GPU autotuner needs the memory meanwhile."""
        if self.sharding.mesh.devices.flat[0].platform != "cpu":
            return
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxllm-kv-zero")
        self._zeroing = (self.num_blocks, pool.submit(self._zeroed))
        pool.shutdown(wait=False)

    def _zeroed(self) -> list[jax.Array]:
        return ops.allocate_kv_cache(self.num_layers, self.num_blocks, self.block_size, self.kv_heads,
                                     self.head_dim, self.dtype, self.sharding)

    def shrink_to(self, measured_bytes: int) -> bool:
        """Record XLA's measured temporaries; when they exceed the reserve of a cache that fills the device, take
        the difference (plus a slack) from ``num_blocks`` and return True (the programs must be compiled again:
        they depend on the cache's shape). A slower start-up instead of running out of memory in ``generate``."""
        self.measured_activation_bytes = measured_bytes
        short = measured_bytes - self.activation_reserve_bytes
        if short <= 0:
            return False
        if not self.fills_device:
            logger.warning("the step needs %.2f GiB of temporaries but %.2f GiB were reserved: lower "
                           "gpu_memory_utilization or max_num_batched_tokens if the device runs out of memory",
                           measured_bytes / 2**30, self.activation_reserve_bytes / 2**30)
            return False
        fewer = -(-(short + GPU_SLACK_BYTES) // self.bytes_per_block)
        if fewer >= self.num_blocks:
            raise ValueError(f"the step needs {measured_bytes / 2**30:.2f} GiB of temporaries, more than the KV "
                             f"cache's {self.num_blocks} blocks free: lower max_num_batched_tokens or max_num_seqs, "
                             f"or raise gpu_memory_utilization")
        logger.warning("the step needs %.2f GiB of temporaries but %.2f GiB were reserved: the KV cache gets %d "
                       "blocks instead of %d; compiling again", measured_bytes / 2**30,
                       self.activation_reserve_bytes / 2**30, self.num_blocks - fewer, self.num_blocks)
        self.activation_reserve_bytes = measured_bytes + GPU_SLACK_BYTES
        self.num_blocks -= fewer
        return True
