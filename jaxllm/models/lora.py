"""LoRA on the decoder layers' projections: the per-target slot-stack layout and the per-layer inputs.

Adapters live in device "slot stacks", one pair per (layer, target): ``a`` [*in, S, R] and ``b`` [S, R, *out]
with S = max_loras + 1 slots (slot 0 is all zeros: "no adapter"), R = max_lora_rank (smaller ranks are
zero-padded) and the adapter's scale folded into ``b``. The stacks are arguments of the jitted step, so loading
an adapter into a slot never recompiles. Each token carries its sequence's slot; the update
x_t @ a[..., s_t, :] @ b[s_t] is added to the base projection's output (jaxllm.ops.lora).

Shape letters: D model dim, F ffn dim, H q heads, K kv heads, Dh head dim.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxllm.lora.layout import TARGETS
from jaxllm.ops.lora import lora_delta


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerLoRA:
    """One decoder layer's adapters for one step: ``slots`` [T] int32 (0 = no adapter) and ``stacks``, every
    target of jaxllm.lora.layout.TARGETS -> (a [*in, S, R], b [S, R, *out])."""

    slots: jax.Array
    stacks: dict[str, tuple[jax.Array, jax.Array]]

    def delta(self, target: str, x: jax.Array) -> jax.Array:
        """x [T, *in] -> the adapters' update [T, *out] of ``target`` (x's dtype)."""
        a, b = self.stacks[target]
        return lora_delta(x, a, b, self.slots)



def layer_loras(leaves: list[jax.Array], slots: jax.Array) -> list[LayerLoRA]:
    """The flat slot stacks (layer-major, TARGETS order, a then b: jaxllm/runner/lora_slots.py) and the token
    slots [T] -> one LayerLoRA per layer."""
    per_layer = 2 * len(TARGETS)
    out = []
    for i in range(len(leaves) // per_layer):
        chunk = leaves[i * per_layer:(i + 1) * per_layer]
        out.append(LayerLoRA(slots, {t: (chunk[2 * j], chunk[2 * j + 1]) for j, t in enumerate(TARGETS)}))
    return out
