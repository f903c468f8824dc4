"""Multi-LoRA serving: ``LoRARequest`` (per prompt), PEFT adapter loading (peft.py) and the host-side adapter
and slot caches (cache.py). The device side is jaxllm/models/lora.py (the slot-stack layout),
jaxllm/runner/lora_slots.py (slots on the device) and jaxllm.ops.lora (the batched product); docs/lora.md."""

from jaxllm.lora.request import LoRARequest, lora_request_list

__all__ = ["LoRARequest", "lora_request_list"]
