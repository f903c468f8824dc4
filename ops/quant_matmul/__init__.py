"""Weight-only int4 matmul (AWQ / GPTQ checkpoints): packed int4 weights + per-group scales and zero points.

See reference.py for the two weight layouts ("packed", "nk"), pallas_triton.py and mosaic_gpu.py for the fused GPU
kernels, dispatch.py for the choice of layout and kernel.
"""

from .dispatch import choose_impl, int4_matmul, int4_matmul_nk, int4_matmul_nk_group, weight_layout
from .mosaic_gpu import MosaicTiles, int4_matmul_mosaic, int4_matmul_mosaic_group, mosaic_plan
from .pallas_triton import Int4Tiles, int4_matmul_pallas, plan
from .reference import (
    PACK,
    check_int4_nk_operands,
    check_int4_operands,
    dequantize_int4,
    dequantize_int4_nk,
    int4_matmul_reference,
    int4_matmul_reference_nk,
    to_nk_layout,
    unpack_int4,
)

__all__ = [
    "PACK", "Int4Tiles", "MosaicTiles", "check_int4_nk_operands", "check_int4_operands", "choose_impl",
    "dequantize_int4", "dequantize_int4_nk", "int4_matmul", "int4_matmul_mosaic", "int4_matmul_mosaic_group",
    "int4_matmul_nk", "int4_matmul_nk_group", "int4_matmul_pallas", "int4_matmul_reference",
    "int4_matmul_reference_nk", "mosaic_plan", "plan", "to_nk_layout", "unpack_int4", "weight_layout",
]
