"""LoRA adapter slots on the device: the slot stacks, filled from host memory as steps need adapters.

For every (layer, target) there is one pair of stacks ``a`` [*in, S, R] / ``b`` [S, R, *out] (S = max_loras + 1,
slot 0 all zeros; jaxllm/lora/layout.py), sharded by the same logical axes as the base projection. The stacks
are arguments of the jitted forward (a flat list, like the parameters), so putting an adapter in a slot is one
small donated update program and never recompiles the step. A step's sequences each name an adapter (or
none); ``step_slots`` gives their tokens' slot ids, loading the adapters that are not in a slot yet (the
scheduler keeps at most ``max_loras`` distinct adapters per step, so a slot is always free or evictable).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from jaxllm.lora.cache import AdapterStore, SlotTable
from jaxllm.lora.layout import TARGETS, stack_shapes
from jaxllm.lora.peft import LoRAAdapter, load_peft_adapter
from jaxllm.parallel.sharding import logical_to_spec, sharding_rules

logger = logging.getLogger("jaxllm")


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_slot(stacks, values, slot):
    """stacks: the flat list of a [*in, S, R] / b [S, R, *out] stacks, alternating (donated); values: the same
    without the S axis; slot: int32 scalar."""
    return [jax.lax.dynamic_update_index_in_dim(s, v.astype(s.dtype), slot, s.ndim - 2 if i % 2 == 0 else 0)
            for i, (s, v) in enumerate(zip(stacks, values))]


class LoRASlots:
    """The device slot stacks of ``max_loras`` adapters of rank <= ``max_lora_rank`` in ``dtype``, and the host
    caches behind them (up to ``max_cpu_loras`` adapters in host memory)."""

    def __init__(self, cfg, mesh, *, max_loras: int, max_lora_rank: int, max_cpu_loras: int, dtype,
                 base_model_path: str | None = None):
        self.cfg, self.max_lora_rank, self.dtype = cfg, max_lora_rank, jnp.dtype(dtype)
        self.base_model_path = base_model_path
        self.store = AdapterStore(max_cpu_loras, self._load)
        self.table = SlotTable(max_loras)
        rules = sharding_rules(cfg, mesh.devices.size)
        self._shapes = []  # per leaf: its shape without the slot axis
        leaves = []
        for _ in range(cfg.num_layers):
            for target in TARGETS:
                (a_shape, a_axes), (b_shape, b_axes) = stack_shapes(cfg, target, max_loras + 1, max_lora_rank)
                for shape, axes in ((a_shape, a_axes), (b_shape, b_axes)):
                    sharding = NamedSharding(mesh, logical_to_spec(axes, rules))
                    leaves.append(jax.device_put(jnp.zeros(shape, self.dtype), sharding))
                self._shapes += [a_shape[:-2] + a_shape[-1:], b_shape[1:]]
        self.leaves = leaves
        self.num_slot_writes = 0
        # compiled now, so that putting the first adapter in a slot during generate does not compile
        values = [jax.ShapeDtypeStruct(shape, self.dtype) for shape in self._shapes]
        self._write_program = _write_slot.lower(leaves, values, jnp.int32(0)).compile()

    @property
    def nbytes(self) -> int:
        return sum(leaf.nbytes for leaf in self.leaves)

    def _load(self, request) -> LoRAAdapter:
        return load_peft_adapter(request.lora_path, request.lora_int_id, self.cfg, self.max_lora_rank,
                                 self.dtype, self.base_model_path)

    def check(self, request) -> None:
        """Validate (and cache on the host) the adapter of ``request``: a ValueError before any device work."""
        self.store.check(request)

    def step_slots(self, seqs, num_tokens: int) -> np.ndarray:
        """[num_tokens] int32: the slot of each new token of ``seqs`` (ScheduledSeqs, batch order), 0 for base
        model tokens and padding. Loads into free or least recently used slots the adapters not in one."""
        requests = {s.lora_request.lora_int_id: s.lora_request for s in seqs if s.lora_request is not None}
        mapping, loads = self.table.assign(requests)
        for lora_id, slot in loads:
            self._write(self.store.get(requests[lora_id]), slot)
        per_seq = [mapping[s.lora_request.lora_int_id] if s.lora_request is not None else 0 for s in seqs]
        out = np.zeros(num_tokens, np.int32)
        n = sum(s.num_new_tokens for s in seqs)
        out[:n] = np.repeat(np.asarray(per_seq, np.int32), [s.num_new_tokens for s in seqs])
        return out

    def _write(self, adapter: LoRAAdapter, slot: int) -> None:
        """Copy ``adapter`` into device slot ``slot`` (targets it does not adapt are zeroed)."""
        values = []
        for layer in range(self.cfg.num_layers):
            for target in TARGETS:
                pair = adapter.weights.get((layer, target))
                a_shape, b_shape = self._shapes[len(values)], self._shapes[len(values) + 1]
                a = np.zeros(a_shape, self.dtype)
                b = np.zeros(b_shape, self.dtype)
                if pair is not None:
                    r = adapter.rank
                    a[..., :r] = pair[0]
                    b[:r] = pair[1]
                values += [a, b]
        self.leaves = self._write_program(self.leaves, values, jnp.int32(slot))
        self.num_slot_writes += 1
        logger.debug("LoRA adapter %d loaded into slot %d", adapter.lora_int_id, slot)
