"""Picks the int4 weight layout (at load time) and the int4 matmul implementation (per call).

Layouts (reference.py): "packed" (``qweight`` [K // 8, N] int32) and "nk" (``wt`` [N, K] int4, Hopper).
Implementations:

* ``"reference"``: jnp (reference.py): dequantizes W to x.dtype, then one dot, in either layout. Any platform.
  On the GPU XLA fuses the packed layout's unpack/dequantize into its Triton GEMM for small M and dequantizes
  then calls cuBLAS for large M (vLLM's AWQ path does the same from 256 tokens).
* ``"pallas_triton"``: our Pallas -> Triton kernel on the packed layout (pallas_triton.py), NVIDIA sm_80+.
* ``"mosaic_gpu"``: our Mosaic GPU kernel on the nk layout (mosaic_gpu.py), Hopper only (wgmma/TMA).

Default, on Hopper with bfloat16 activations: the nk layout, with the Mosaic GPU kernel up to MOSAIC_MAX_ROWS
rows (decode steps and small prefill chunks: gate_up / down measured 1.2-1.5x XLA's bf16 GEMM at 16-64 rows and
0.9-1.2x at 128-256, the small q / o products slower than bf16; XLA's dequantize + GEMM was 0.4-0.6x there) and
the reference above. On Hopper with float16 activations (AWQ checkpoints are often float16): the packed layout,
the Triton kernel up to TRITON_MAX_ROWS rows (0.80x bf16 on decode-heavy B2 against 0.44x through the
reference) and the reference above. On other GPUs and off the GPU: the packed layout and the
reference (the Triton kernel runs on sm_80+ but was never timed off Hopper). A product the chosen kernel's tiles
do not fit runs through the reference (Mosaic: N % 128 or a group size not a multiple of 64).
The ``impl`` argument (``LLM(quant_matmul_impl=reference|pallas_triton|mosaic_gpu)``) forces one
for every M; forcing it also fixes the layout at load time (``mosaic_gpu``: nk, which needs a Hopper GPU; the
others: packed). Forced off the GPU, ``pallas_triton`` runs in Pallas' interpret mode (tests). Measured on the
H200: docs/quantization.md, benchmarks/README.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..device_info import gpu_compute_capability, num_sms
from .mosaic_gpu import int4_matmul_mosaic, int4_matmul_mosaic_group, mosaic_plan
from .pallas_triton import int4_matmul_pallas, plan
from .reference import (
    check_int4_nk_operands,
    check_int4_operands,
    int4_matmul_reference,
    int4_matmul_reference_nk,
)

IMPLEMENTATIONS = {"reference": int4_matmul_reference, "pallas_triton": int4_matmul_pallas,
                   "mosaic_gpu": int4_matmul_mosaic}
LAYOUT_IMPLS = {"packed": ("reference", "pallas_triton"), "nk": ("reference", "mosaic_gpu")}
MOSAIC_MAX_ROWS = 256
TRITON_MAX_ROWS = 64  # the packed layout on Hopper (float16 models): where the Triton kernel beats the reference


def _check_impl(impl: str | None) -> str | None:
    if impl is not None and impl not in IMPLEMENTATIONS:
        raise ValueError(f"int4 matmul impl {impl!r} is not available; available: {sorted(IMPLEMENTATIONS)}")
    return impl


def _hopper() -> bool:
    cc = gpu_compute_capability()
    return cc is not None and cc[0] == 9


def weight_layout(activation_dtype, impl: str | None = None) -> str:
    """The layout int4 weights are stored in after loading, for a model computing in ``activation_dtype``: "nk"
    on Hopper with bfloat16 activations (the Mosaic GPU kernel's operand type) or with mosaic_gpu forced (which
    needs Hopper); "packed" elsewhere, for float16 / float32 models (AWQ checkpoints are often float16: on Hopper
    they keep the Triton kernel) or with another implementation forced."""
    forced = _check_impl(impl)
    if forced == "mosaic_gpu" and not _hopper():
        raise ValueError(f"quant_matmul_impl='mosaic_gpu' needs a Hopper GPU (sm_90); this device is "
                         f"{jax.devices()[0].device_kind} (compute capability {gpu_compute_capability()})")
    bf16 = jnp.dtype(activation_dtype) == jnp.bfloat16
    if forced == "mosaic_gpu" and not bf16:
        raise ValueError(f"quant_matmul_impl='mosaic_gpu' takes bfloat16 activations; this model computes "
                         f"in {jnp.dtype(activation_dtype).name} (load it with dtype='bfloat16', or force "
                         f"'pallas_triton' / 'reference')")
    if forced:
        return "nk" if forced == "mosaic_gpu" else "packed"
    return "nk" if _hopper() and bf16 else "packed"


def choose_impl(m: int, layout: str = "packed") -> str:
    """The implementation for an [m, K] x [K, N] product in ``layout`` when the call forces none."""
    if layout == "nk":
        return "mosaic_gpu" if _hopper() and m <= MOSAIC_MAX_ROWS else "reference"
    return "pallas_triton" if _hopper() and m <= TRITON_MAX_ROWS else "reference"


def _resolve(impl: str | None, m: int, layout: str) -> tuple[str, bool]:
    """(implementation, whether it was forced) for a call in ``layout``."""
    forced = _check_impl(impl)
    name = forced or choose_impl(m, layout)
    if name not in LAYOUT_IMPLS[layout]:
        raise ValueError(f"int4 matmul impl {name!r} is not available for the {layout!r} weight layout; "
                         f"available: {list(LAYOUT_IMPLS[layout])} (the layout is fixed when the model is loaded)")
    return name, bool(forced)


def _kernel_tiles(name: str, forced: bool, tiles, m: int, k: int, n: int, group_size: int):
    """The kernel's planned tiles. None sends the default choice to the reference (a shape no tile fits); for a
    forced kernel it is an error naming the shape."""
    if tiles is None and forced:
        raise ValueError(f"int4 matmul impl {name!r} has no tiling for M={m}, K={k}, N={n}, group size "
                         f"{group_size}; use impl='reference'")
    return tiles


def int4_matmul(x: jax.Array, qweight, scales, zeros, out_dtype=None, *, impl: str | None = None,
                variant: str | None = None) -> jax.Array:
    """x [..., K] @ W [K, N] -> [..., N] for W in the packed int4 layout (reference.py); float32 accumulation,
    result in ``out_dtype`` (default x.dtype). ``impl`` forces an implementation, ``variant`` the Triton
    kernel's (pallas_triton.VARIANTS); None: the measured choice for the shape."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    k, n, group_size = check_int4_operands(x2, qweight, scales, zeros)
    name, forced = _resolve(impl, x2.shape[0], "packed")
    tiles = None
    if name == "pallas_triton":
        tiles = _kernel_tiles(name, forced, plan(x2.shape[0], k, n, group_size, num_sms(), variant),
                              x2.shape[0], k, n, group_size)
    if tiles is not None:
        # forced off the GPU (tests): Pallas' interpret mode runs the same kernel
        interpret = jax.devices()[0].platform != "gpu"
        out = int4_matmul_pallas(x2, qweight, scales, zeros, out_dtype, tiles=tiles, interpret=interpret)
    else:
        out = int4_matmul_reference(x2, qweight, scales, zeros, out_dtype)
    return out.reshape(*lead, n)


def int4_matmul_nk(x: jax.Array, wt, scales, zeros, out_dtype=None, *, impl: str | None = None) -> jax.Array:
    """x [..., K] @ W -> [..., N] for W in the nk layout (``wt`` [N, K] int4); float32 accumulation, result in
    ``out_dtype`` (default x.dtype)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    k, n, group_size = check_int4_nk_operands(x2, wt, scales, zeros)
    tiles = _mosaic_tiles(x2, k, n, group_size, impl)
    if tiles is not None:
        out = int4_matmul_mosaic(x2, wt, scales, zeros, out_dtype, tiles=tiles, num_sms=num_sms())
    else:
        out = int4_matmul_reference_nk(x2, wt, scales, zeros, out_dtype)
    return out.reshape(*lead, n)


def _mosaic_tiles(x2, k: int, n: int, group_size: int, impl: str | None):
    """The Mosaic GPU kernel's tiles for x2 [M, K] @ W (nk layout) when the dispatch picks that kernel, else None
    (the nk reference runs); errors for a forced kernel that cannot run."""
    name, forced = _resolve(impl, x2.shape[0], "nk")
    if name != "mosaic_gpu":
        return None
    if not _hopper():
        raise ValueError("int4 matmul impl 'mosaic_gpu' needs a Hopper GPU (sm_90); use impl='reference'")
    tiles = _kernel_tiles(name, forced, mosaic_plan(x2.shape[0], k, n, group_size, num_sms()), x2.shape[0], k, n,
                          group_size)
    if x2.dtype != jnp.bfloat16:  # a float16 / float32 call: the kernel's operands are bf16
        if forced:
            raise ValueError(f"int4 matmul impl 'mosaic_gpu' takes bfloat16 activations, got {x2.dtype}; use "
                             f"impl='reference'")
        return None
    return tiles


def int4_matmul_nk_group(x: jax.Array, weights, out_dtype=None, *, impl: str | None = None) -> list[jax.Array]:
    """[x @ W_i] for ``weights`` = [(wt_i [N_i, K], scales_i, zeros_i)] in the nk layout sharing x: one grouped
    Mosaic GPU launch where the kernel is chosen and every weight fits its tiles (same group size), otherwise one
    ``int4_matmul_nk`` per weight (same results either way)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    shapes = [check_int4_nk_operands(x2, *w) for w in weights]
    k, _, group_size = shapes[0]
    fits = len(weights) > 1 and all(g == group_size and mosaic_plan(x2.shape[0], k, n, g, num_sms())
                                    for _, n, g in shapes)
    tiles = _mosaic_tiles(x2, k, sum(n for _, n, _ in shapes), group_size, impl) if fits else None
    if tiles is not None:
        outs = int4_matmul_mosaic_group(x2, weights, out_dtype, tiles=tiles, num_sms=num_sms())
        return [o.reshape(*lead, o.shape[-1]) for o in outs]
    return [int4_matmul_nk(x, *w, out_dtype, impl=impl) for w in weights]
