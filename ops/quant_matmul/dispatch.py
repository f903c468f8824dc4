"""Picks the int4 matmul implementation.

* ``"reference"``: jnp (reference.py): dequantizes W to x.dtype, then one dot. Any platform. On the GPU, XLA
  fuses the unpack/dequantize into its Triton GEMM for small M (a "nested gemm fusion": W is read packed, never
  written) and dequantizes then calls cuBLAS for large M (vLLM's AWQ path does the same from 256 tokens).
* ``"pallas_triton"``: our fused kernel (pallas_triton.py), NVIDIA sm_80+: W is read packed, never written.

Measured on the H200 (benchmarks/quant_matmul_h200.md, Llama-8B gate_up / down, M = 1, 16, 256): XLA's fusion
of the reference beats the Pallas kernel at every M (e.g. gate_up M=1: 59 vs 115 us, the best tiling), so
``reference`` is the default everywhere. ``JAXLLM_QUANT_MATMUL_IMPL=pallas_triton`` (or the ``impl`` argument,
which wins) forces the kernel, for measurements and for GPUs where it may win (not measured: Ampere, Ada).
Forced off the GPU, ``pallas_triton`` runs in Pallas' interpret mode (tests).
"""

from __future__ import annotations

import jax

from ..device_info import forced_implementation
from .pallas_triton import int4_matmul_pallas, plan
from .reference import check_int4_operands, int4_matmul_reference

IMPLEMENTATIONS = {"reference": int4_matmul_reference, "pallas_triton": int4_matmul_pallas}


def _num_cores() -> int:
    return int(getattr(jax.devices()[0], "core_count", 0) or 132)


def choose_impl() -> str:
    """The implementation used when the call forces none: the measured choice does not depend on the shape (see
    the module docstring)."""
    return forced_implementation("JAXLLM_QUANT_MATMUL_IMPL", IMPLEMENTATIONS) or "reference"


def int4_matmul(x: jax.Array, qweight, scales, zeros, out_dtype=None, *, impl: str | None = None) -> jax.Array:
    """x [..., K] @ W [K, N] -> [..., N] for W in the packed int4 layout (reference.py); float32 accumulation,
    result in ``out_dtype`` (default x.dtype)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    k, n, group_size = check_int4_operands(x2, qweight, scales, zeros)
    name = impl or choose_impl()
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
