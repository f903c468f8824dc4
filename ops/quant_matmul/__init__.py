"""Weight-only int4 matmul (AWQ / GPTQ checkpoints): packed int4 weights + per-group scales and zero points.

See reference.py for the packed layout, pallas_triton.py for the fused GPU kernel, dispatch.py for the choice.
"""

from .dispatch import choose_impl, int4_matmul
from .pallas_triton import Int4Tiles, int4_matmul_pallas, plan
from .reference import PACK, check_int4_operands, dequantize_int4, int4_matmul_reference, unpack_int4

__all__ = [
    "PACK", "Int4Tiles", "check_int4_operands", "choose_impl", "dequantize_int4", "int4_matmul",
    "int4_matmul_pallas", "int4_matmul_reference", "plan", "unpack_int4",
]
