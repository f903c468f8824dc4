"""The device mesh and the ONE table mapping logical parameter axes to mesh axes.

Tensor parallelism splits attention heads, the MLP hidden dim and the vocabulary over the ``model`` axis;
the model dim, head dim and norms are replicated. MoE experts split their ffn dim, or with expert parallelism
(``enable_expert_parallel``) the experts themselves. Every parameter's ``logical_axes`` metadata is translated
to a ``PartitionSpec`` here and nowhere else.
"""

from __future__ import annotations

import jax
import numpy as np
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
    # MoE experts [E, ...]: Megatron-style over each expert's ffn dim by default; with enable_expert_parallel
    # whole experts per device instead (sharding_rules swaps the two)
    "expert": None,
    "moe_mlp": MODEL_AXIS,
    # KV cache axes
    "cache_kv": None,
    "cache_blocks": None,
    "cache_slots": None,
    "cache_heads": MODEL_AXIS,
}


def sharding_rules(cfg, tensor_parallel_size: int) -> dict[str, str | None]:
    """The rules for one model at one TP degree. Heads and the MLP must split evenly (else a clear error);
    kv heads (and the KV cache) are replicated when they cannot be split (tp > kv heads), so each device
    holds what its query heads need; an indivisible vocabulary is replicated."""
    tp = tensor_parallel_size
    for name, size in _split_dims(cfg):
        if size % tp:
            raise ValueError(f"tensor_parallel_size={tp} does not divide {name}={size}")
    rules = dict(LOGICAL_RULES)
    if cfg.enable_expert_parallel:
        rules["expert"], rules["moe_mlp"] = MODEL_AXIS, None
    if cfg.num_kv_heads % tp:
        if tp % cfg.num_kv_heads:
            raise ValueError(f"tensor_parallel_size={tp} and num_key_value_heads={cfg.num_kv_heads}: one must "
                             "divide the other")
        rules["kv_heads"] = None  # k/v projections replicated; the cache gets tp head slots (cache_kv_heads)
    if cfg.vocab_size % tp:
        rules["vocab"] = None
    return rules


def _split_dims(cfg) -> list[tuple[str, int]]:
    """(config name, size) of every dimension tensor parallelism splits: heads, the dense MLP (when a layer has
    one), and the experts' ffn dim or, under expert parallelism, the experts."""
    moe = cfg.moe_layers
    dims = [("num_attention_heads", cfg.num_heads)]
    if not moe or not all(moe):
        dims.append(("intermediate_size", cfg.intermediate_size))
    if any(moe):
        dims.append(("num_experts", cfg.num_experts) if cfg.enable_expert_parallel
                    else ("moe_intermediate_size", cfg.moe_intermediate_size))
        if cfg.shared_expert_intermediate_size:  # (Qwen2-MoE's shared expert: a dense MLP split like one)
            dims.append(("shared_expert_intermediate_size", cfg.shared_expert_intermediate_size))
    return dims


def cache_kv_heads(num_kv_heads: int, tensor_parallel_size: int) -> int:
    """Head slots of the KV cache: the kv heads, or one slot per device when the devices outnumber them (slot i
    holds kv head i // (tp / K)), so that the cache is always split over the model axis."""
    return num_kv_heads if num_kv_heads % tensor_parallel_size == 0 else tensor_parallel_size


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


def replica_meshes(tensor_parallel_size: int, data_parallel_size: int, devices=None) -> list[Mesh]:
    """One 1-D ``model`` mesh per data-parallel replica: replica r gets devices [r * tp, (r + 1) * tp) of
    ``jax.devices()`` (all processes' devices, ordered by process, under ``jax.distributed``)."""
    devices = sorted(devices if devices is not None else jax.devices(), key=lambda d: (d.process_index, d.id))
    need = tensor_parallel_size * data_parallel_size
    if data_parallel_size > 1 and need > len(devices):
        raise ValueError(f"tensor_parallel_size={tensor_parallel_size} x data_parallel_size={data_parallel_size} "
                         f"needs {need} devices; {len(devices)} {devices[0].platform} devices are available")
    tp = tensor_parallel_size
    return [make_mesh(tp, devices[r * tp:(r + 1) * tp]) for r in range(data_parallel_size)]


def is_local(mesh: Mesh) -> bool:
    """Whether this process drives any of ``mesh``'s devices (under ``jax.distributed``, every process that
    does runs the mesh's programs)."""
    return any(d.process_index == jax.process_index() for d in mesh.devices.flat)


def local_meshes(tensor_parallel_size: int, data_parallel_size: int) -> list[Mesh]:
    """The replica meshes this process takes part in (``replica_meshes``, in replica order). A process whose
    devices serve no replica is a ValueError: every process of a ``jax.distributed`` job must take part."""
    meshes = [m for m in replica_meshes(tensor_parallel_size, data_parallel_size) if is_local(m)]
    if not meshes:
        raise ValueError(f"process {jax.process_index()} drives none of the tensor_parallel_size="
                         f"{tensor_parallel_size} x data_parallel_size={data_parallel_size} devices in use; make "
                         f"them cover all {jax.device_count()} devices of the {jax.process_count()} processes")
    return meshes


def copy_to_mesh(tree, mesh: Mesh):
    """``tree``'s arrays on ``mesh`` with the same partition specs (a device-to-device copy: the weights are read
    from the checkpoint once, for replica 0, and copied to the other replicas)."""
    def move(a):
        if not isinstance(a, jax.Array):
            return a
        return jax.device_put(a, NamedSharding(mesh, getattr(a.sharding, "spec", PartitionSpec())))

    return jax.tree_util.tree_map(move, tree)
