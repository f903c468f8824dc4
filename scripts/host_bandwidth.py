"""Host <-> device bandwidth of the KV cache's host tier (docs/kv_offload.md), on the local device.

Measures (1) raw transfers of one large buffer: numpy <-> device and device <-> a JAX ``pinned_host`` array,
and (2) the host tier's own copies (``jaxllm.runner.kv_swap.HostKVPool``, pinned-host slots): swapping n blocks of a
Llama-3.1-8B shaped cache (32 layers, 8 KV heads of 128, 16-token blocks, bf16: 2 MiB a block) out and back in.

    python scripts/host_bandwidth.py [--blocks 4096] [--layers 32] [--output bw.json]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxllm.runner.kv_swap import HostKVPool


def timed(fn, repeat: int = 5) -> float:
    fn()  # compile / warm up (twice: a donated output's placement can differ from a fresh array's)
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def raw_bandwidth(nbytes: int) -> dict:
    dev = jax.devices()[0]
    x = np.ones(nbytes // 2, np.uint16)
    on_dev = jax.device_put(x, dev)
    out = {"bytes": nbytes,
           "numpy_to_device_GBps": nbytes / timed(lambda: jax.device_put(x, dev).block_until_ready()) / 1e9,
           "device_to_numpy_GBps": nbytes / timed(lambda: np.asarray(on_dev + 0)) / 1e9}
    try:
        pinned = SingleDeviceSharding(dev, memory_kind="pinned_host")
        host_arr = jax.device_put(on_dev, pinned)
        out["device_to_pinned_GBps"] = nbytes / timed(
            lambda: jax.device_put(on_dev, pinned).block_until_ready()) / 1e9
        on_device = SingleDeviceSharding(dev, memory_kind="device")
        out["pinned_to_device_GBps"] = nbytes / timed(
            lambda: jax.device_put(host_arr, on_device).block_until_ready()) / 1e9
    except Exception as e:  # noqa: BLE001 - a backend without the memory kind: report it
        out["pinned_host"] = f"unavailable: {type(e).__name__}: {e}"
    return out


def tier_bandwidth(num_blocks: int, layers: int, counts: tuple[int, ...]) -> dict:
    """The tier's own path (``HostKVPool.apply``), as the runner drives it: the copy programs compiled at
    start-up (``warm_up``), then n scattered blocks swapped out to pinned-host slots and back. ``*_host_ms``: how
    long ``apply`` holds the host (dispatch only); ``*_GBps``: bytes over the time until the copies are done."""
    shape = (2, num_blocks, 16, 8, 128)
    sharding = SingleDeviceSharding(jax.devices()[0])
    caches = [jax.device_put(jnp.zeros(shape, jnp.bfloat16), sharding) for _ in range(layers)]
    pool = HostKVPool(max(counts), [jax.ShapeDtypeStruct(shape, jnp.bfloat16)] * layers, sharding)
    t0 = time.perf_counter()
    caches = pool.warm_up(caches)
    result = {"warm_up_s": time.perf_counter() - t0, "copy_seconds_per_block": pool.copy_seconds_per_block,
              "runs": []}
    for n in counts:
        row, caches = _round_trip(pool, caches, n)
        result["runs"].append(row)
    return result


def _round_trip(pool: HostKVPool, caches: list, n: int) -> tuple[dict, list]:
    """Time ``n`` scattered blocks (as a preempted sequence's are) out to slots ``0..n-1`` and back."""
    nbytes = n * HostKVPool.slot_bytes(caches)
    blocks = list(range(0, 2 * n, 2))
    host_s = {"out": [], "in": []}
    state = {"caches": caches}

    def out():
        t = time.perf_counter()
        pool.apply(state["caches"], list(zip(blocks, range(n))), [])
        host_s["out"].append(time.perf_counter() - t)
        jax.block_until_ready(pool.slots[:n])

    def back():
        t = time.perf_counter()
        state["caches"] = pool.apply(state["caches"], [], list(zip(range(n), blocks)))
        host_s["in"].append(time.perf_counter() - t)
        jax.block_until_ready(state["caches"])

    row = {"blocks": n, "bytes": nbytes, "swap_out_GBps": nbytes / timed(out) / 1e9,
           "swap_in_GBps": nbytes / timed(back) / 1e9}
    row.update({f"swap_{k}_host_ms": 1e3 * float(np.median(v)) for k, v in host_s.items()})
    return row, state["caches"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=4096, help="device cache blocks")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--output")
    a = p.parse_args()
    result = {"device": jax.devices()[0].device_kind, "raw": raw_bandwidth(1 << 30),
              "tier": tier_bandwidth(a.blocks, a.layers, tuple(n for n in (16, 256, 1024) if 2 * n <= a.blocks))}
    print(json.dumps(result, indent=1))
    if a.output:
        with open(a.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
