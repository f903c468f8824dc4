"""Grouped matmul (rows sorted by group, one weight per group): the MoE experts' GEMMs."""

from .dispatch import IMPLEMENTATIONS, grouped_matmul
from .reference import count_at_or_below, grouped_matmul_dense, grouped_matmul_reference, row_groups

__all__ = ["IMPLEMENTATIONS", "count_at_or_below", "grouped_matmul", "grouped_matmul_dense", "grouped_matmul_reference", "row_groups"]
