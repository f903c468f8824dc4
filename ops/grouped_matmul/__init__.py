"""Grouped matmul (rows sorted by group, one weight per group): the MoE experts' GEMMs."""

from .dispatch import IMPLEMENTATIONS, grouped_matmul, grouped_matmul_slotted, layout_plan
from .layout import GroupedLayout, count_at_or_below, grouped_layout
from .reference import grouped_matmul_dense, grouped_matmul_reference, row_groups

__all__ = ["IMPLEMENTATIONS", "GroupedLayout", "count_at_or_below", "grouped_layout", "grouped_matmul",
           "grouped_matmul_dense", "grouped_matmul_reference", "grouped_matmul_slotted", "layout_plan",
           "row_groups"]
