"""Host-side LoRA bookkeeping (no jax): the adapters kept in host memory and the device slots' owners.

- ``AdapterStore``: up to ``max_cpu_loras`` loaded adapters in host memory, least recently used evicted first;
  an evicted adapter is read from its folder again when a request needs it.
- ``SlotTable``: which adapter holds each of the ``max_loras`` device slots (1..max_loras; slot 0 is "no
  adapter"). A step's adapters get slots, the least recently used adapter not in the step giving its slot up;
  the caller loads the adapters that were not in a slot already.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from jaxllm.lora.request import LoRARequest


class AdapterStore:
    """``load(request) -> adapter`` results by ``lora_int_id``, at most ``capacity`` of them (LRU)."""

    def __init__(self, capacity: int, load: Callable[[LoRARequest], Any]):
        self.capacity = capacity
        self._load = load
        self._adapters: OrderedDict[int, Any] = OrderedDict()
        self._requests: dict[int, LoRARequest] = {}  # every id seen: its name and path may not change
        self.num_loads = 0

    def check(self, request: LoRARequest) -> None:
        """Validate ``request`` (loading it when it is not in host memory): ValueError before any device work
        when the adapter is bad or its id was used for another adapter."""
        if not isinstance(request, LoRARequest):
            raise TypeError(f"lora_request must be a jaxllm.lora.LoRARequest, got {type(request).__name__}")
        seen = self._requests.get(request.lora_int_id)
        if seen is not None and (seen.lora_path, seen.lora_name) != (request.lora_path, request.lora_name):
            raise ValueError(f"lora_int_id={request.lora_int_id} is already used by adapter {seen.lora_name!r} "
                             f"({seen.lora_path!r}); give {request.lora_name!r} its own id")
        self.get(request)
        self._requests[request.lora_int_id] = request

    def get(self, request: LoRARequest) -> Any:
        adapter = self._adapters.get(request.lora_int_id)
        if adapter is None:
            adapter = self._load(request)
            self.num_loads += 1
            self._adapters[request.lora_int_id] = adapter
            while len(self._adapters) > self.capacity:
                self._adapters.popitem(last=False)
        self._adapters.move_to_end(request.lora_int_id)
        return adapter

    def __contains__(self, lora_int_id: int) -> bool:
        return lora_int_id in self._adapters


class SlotTable:
    """Adapter id -> device slot in 1..``num_slots``, least recently used first."""

    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self._slots: OrderedDict[int, int] = OrderedDict()

    def assign(self, ids: Iterable[int]) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """Slots for one step's adapter ids -> (id -> slot, [(id, slot) whose weights must be loaded])."""
        ids = list(dict.fromkeys(ids))
        if len(ids) > self.num_slots:
            raise RuntimeError(f"{len(ids)} adapters in one step but max_loras={self.num_slots}")
        for i in ids:
            if i in self._slots:
                self._slots.move_to_end(i)
        free = sorted(set(range(1, self.num_slots + 1)) - set(self._slots.values()))
        loads = []
        for i in ids:
            if i in self._slots:
                continue
            if free:
                slot = free.pop(0)
            else:  # the least recently used adapter that this step does not use
                victim = next(v for v in self._slots if v not in ids)
                slot = self._slots.pop(victim)
            self._slots[i] = slot
            loads.append((i, slot))
        return {i: self._slots[i] for i in ids}, loads

