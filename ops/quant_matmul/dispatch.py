"""Picks the int4 matmul implementation.

* ``"reference"``: jnp (reference.py): dequantizes W to x.dtype, then one dot. Any platform. On the GPU, XLA
  fuses the unpack/dequantize into its Triton GEMM for small M (a "nested gemm fusion": W is read packed, never
  written) and dequantizes then calls cuBLAS for large M (vLLM's AWQ path does the same from 256 tokens).
* ``"pallas_triton"``: our fused kernel (pallas_triton.py), NVIDIA sm_80+: W is read packed, never written.

Default: the kernel on Hopper (sm_90, where it was measured) for M <= KERNEL_MAX_ROWS rows (decode steps: the
kernel reads the packed weight once; decode-heavy B2 at 64 requests 0.80x bf16 against 0.44x through the
reference), the reference above (prefill chunks, compute bound: cuBLAS on the dequantized weight), on other GPUs
(the kernel runs on sm_80+ but was never timed there) and off the GPU. Measured on the H200:
benchmarks/quant_matmul_h200.md, benchmarks/throughput_h200.md (B2decode64_*).
``JAXLLM_QUANT_MATMUL_IMPL=reference|pallas_triton`` (or the ``impl`` argument, which wins) forces one for every
M; forced off the GPU, ``pallas_triton`` runs in Pallas' interpret mode (tests).
"""

from __future__ import annotations

import jax

from ..device_info import forced_implementation, gpu_compute_capability
from .pallas_triton import int4_matmul_pallas, plan
from .reference import check_int4_operands, int4_matmul_reference

IMPLEMENTATIONS = {"reference": int4_matmul_reference, "pallas_triton": int4_matmul_pallas}


def _num_cores() -> int:
    return int(getattr(jax.devices()[0], "core_count", 0) or 132)


KERNEL_MAX_ROWS = 64


def choose_impl(m: int) -> str:
    """The implementation for an [m, K] x [K, N] product when the call forces none (see the module docstring)."""
    forced = forced_implementation("JAXLLM_QUANT_MATMUL_IMPL", IMPLEMENTATIONS)
    if forced:
        return forced
    cc = gpu_compute_capability()
    return "pallas_triton" if cc is not None and cc[0] == 9 and m <= KERNEL_MAX_ROWS else "reference"


def int4_matmul(x: jax.Array, qweight, scales, zeros, out_dtype=None, *, impl: str | None = None) -> jax.Array:
    """x [..., K] @ W [K, N] -> [..., N] for W in the packed int4 layout (reference.py); float32 accumulation,
    result in ``out_dtype`` (default x.dtype)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    k, n, group_size = check_int4_operands(x2, qweight, scales, zeros)
    forced = impl or forced_implementation("JAXLLM_QUANT_MATMUL_IMPL", IMPLEMENTATIONS)
    name = forced or choose_impl(x2.shape[0])
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"int4 matmul impl {name!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    tiles = plan(x2.shape[0], k, n, group_size, _num_cores()) if name == "pallas_triton" else None
    if name == "pallas_triton" and tiles is None and forced:
        raise ValueError(f"int4 matmul impl 'pallas_triton' has no tiling for M={x2.shape[0]}, K={k}, N={n}, "
                         f"group size {group_size}; use impl='reference'")
    if tiles is not None:  # (the default choice on a shape no tile divides falls through to the reference)
        # forced off the GPU (tests): Pallas' interpret mode runs the same kernel
        interpret = jax.devices()[0].platform != "gpu"
        out = int4_matmul_pallas(x2, qweight, scales, zeros, out_dtype, tiles=tiles, interpret=interpret)
    else:
        out = int4_matmul_reference(x2, qweight, scales, zeros, out_dtype)
    return out.reshape(*lead, n)
