"""A fused parameter's parts are copied straight into their blocks of one host buffer (loader._fused_slot /
_fused_shape): the same array as stacking the parts and moving the stacked axes into place."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxllm.weights.loader import _fused_shape, _fused_slot


def _stacked(parts: dict, num_parts: tuple, axes: tuple) -> np.ndarray:
    """The definition: parts stacked in row-major part order, the stacked axes moved to ``axes``."""
    blocks = [parts[p] for p in itertools.product(*(range(n) for n in num_parts))]
    out = np.stack(blocks).reshape(*num_parts, *blocks[0].shape)
    return np.moveaxis(out, tuple(range(len(axes))), axes)


@pytest.mark.parametrize("num_parts, axes, block", [
    ((3,), (1,), (4, 5)),  # q/k/v into [D, 3, ...]
    ((2,), (1,), (6, 7)),  # gate/up
    ((4, 2), (0, 2), (5, 3)),  # stacked experts [E, D, 2, F]
    ((2, 3), (2, 0), (4, 5)),  # axes given out of order
])
def test_parts_land_where_stacking_puts_them(num_parts, axes, block):
    rng = np.random.default_rng(0)
    parts = {p: rng.standard_normal(block).astype(np.float32)
             for p in itertools.product(*(range(n) for n in num_parts))}
    fused = np.full(_fused_shape(block, num_parts, axes), np.nan, np.float32)
    for p, arr in parts.items():
        fused[_fused_slot(num_parts, axes, p, fused.ndim)] = arr.T.T  # a strided view copies the same
    np.testing.assert_array_equal(fused, _stacked(parts, num_parts, axes))


def test_a_part_outside_the_fused_parameter_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        _fused_slot((2,), (1,), (2,), 3)
