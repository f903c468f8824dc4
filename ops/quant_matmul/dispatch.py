"""Picks the int4 matmul implementation.

* ``"reference"``: jnp (reference.py): dequantizes W to x.dtype, then one dot. Any platform; the CPU path, and
  on the GPU the better choice for large M, where the one-off dequantization is cheap next to the GEMM (vLLM's
  AWQ path switches to dequantize + GEMM at 256 tokens for the same reason).
* ``"pallas_triton"``: the fused kernel (pallas_triton.py), NVIDIA sm_80+: W is read packed, never written.

``JAXLLM_QUANT_MATMUL_IMPL`` (or the ``impl`` argument, which wins) forces one. Otherwise: ``pallas_triton``
on an NVIDIA GPU of compute capability >= 8.0 when M < ``JAXLLM_QUANT_MATMUL_MAX_M`` (default 256) and a tiling
exists, else ``reference``. Forced off the GPU, ``pallas_triton`` runs in Pallas' interpret mode (tests).
"""

from __future__ import annotations

import os

import jax

from ..device_info import forced_implementation, gpu_compute_capability
from .pallas_triton import int4_matmul_pallas, plan
from .reference import check_int4_operands, int4_matmul_reference

IMPLEMENTATIONS = {"reference": int4_matmul_reference, "pallas_triton": int4_matmul_pallas}
DEFAULT_MAX_M = 256


def _num_cores() -> int:
    return int(getattr(jax.devices()[0], "core_count", 0) or 132)


def choose_impl(m: int, k: int, n: int, group_size: int) -> str:
    """The implementation used for x [M, K] @ W [K, N] with groups of ``group_size`` when none is forced."""
    forced = forced_implementation("JAXLLM_QUANT_MATMUL_IMPL", IMPLEMENTATIONS)
    if forced:
        return forced
    cc = gpu_compute_capability()
    max_m = int(os.environ.get("JAXLLM_QUANT_MATMUL_MAX_M", DEFAULT_MAX_M))
    if cc is not None and cc >= (8, 0) and m < max_m and plan(m, k, n, group_size) is not None:
        return "pallas_triton"
    return "reference"


def int4_matmul(x: jax.Array, qweight, scales, zeros, out_dtype=None, *, impl: str | None = None) -> jax.Array:
    """x [..., K] @ W [K, N] -> [..., N] for W in the packed int4 layout (reference.py); float32 accumulation,
    result in ``out_dtype`` (default x.dtype)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    k, n, group_size = check_int4_operands(x2, qweight, scales, zeros)
    name = impl or choose_impl(x2.shape[0], k, n, group_size)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"int4 matmul impl {name!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    if name == "pallas_triton":
        tiles = plan(x2.shape[0], k, n, group_size, _num_cores())
        if tiles is None:
            raise ValueError(f"int4 matmul impl 'pallas_triton' has no tiling for M={x2.shape[0]}, K={k}, N={n}, "
                             f"group size {group_size}; use impl='reference'")
        # forced off the GPU (tests): Pallas' interpret mode runs the same kernel
        interpret = jax.devices()[0].platform != "gpu"
        out = int4_matmul_pallas(x2, qweight, scales, zeros, out_dtype, tiles=tiles, interpret=interpret)
    else:
        out = int4_matmul_reference(x2, qweight, scales, zeros, out_dtype)
    return out.reshape(*lead, n)
