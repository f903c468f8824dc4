"""The device mesh and the ONE table mapping logical parameter axes to mesh axes.

Tensor parallelism splits attention heads, the MLP hidden dim and the vocabulary over the ``model`` axis;
the model dim, head dim and norms are replicated. Every parameter's ``logical_axes`` metadata is translated
to a ``PartitionSpec`` here and nowhere else.
"""

from __future__ import annotations

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MODEL_AXIS = "model"

# logical axis -> mesh axis (None = replicated)
LOGICAL_RULES: dict[str, str | None] = {
    "vocab": MODEL_AXIS,
    "embed": None,
    "q_heads": MODEL_AXIS,
    "kv_heads": MODEL_AXIS,
    "head_dim": None,
    "mlp": MODEL_AXIS,
    "norm": None,
    # KV cache axes
    "cache_kv": None,
    "cache_blocks": None,
    "cache_slots": None,
    "cache_heads": MODEL_AXIS,
}


def make_mesh(tensor_parallel_size: int = 1, devices=None) -> Mesh:
    """A 1-D mesh over the first ``tensor_parallel_size`` devices (all processes' devices when
    ``jax.distributed`` is initialised)."""
    devices = list(devices if devices is not None else jax.devices())
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if tensor_parallel_size > len(devices):
        raise ValueError(f"tensor_parallel_size={tensor_parallel_size} exceeds the {len(devices)} available "
                         f"{devices[0].platform} devices")
    return Mesh(np.array(devices[:tensor_parallel_size]), (MODEL_AXIS,))


def logical_to_spec(axes: tuple[str | None, ...], rules: dict[str, str | None] | None = None) -> PartitionSpec:
    rules = LOGICAL_RULES if rules is None else rules
    return PartitionSpec(*(None if a is None else rules[a] for a in axes))


def named_sharding(mesh: Mesh, axes: tuple[str | None, ...], rules=None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
