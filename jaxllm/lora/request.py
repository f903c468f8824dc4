"""``LoRARequest``: which adapter a prompt runs with (vLLM's ``vllm.lora.request.LoRARequest``; no jax)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class LoRARequest:
    """A PEFT LoRA adapter for a request: ``lora_name`` (a readable name), ``lora_int_id`` (a positive id,
    unique per adapter: it names the adapter's device slot and keys the prefix cache) and ``lora_path`` (a
    folder with ``adapter_config.json`` and ``adapter_model.safetensors``). As in vLLM, two requests are equal
    when their names are."""

    lora_name: str
    lora_int_id: int
    lora_path: str = ""  # required: the default only keeps vLLM's positional order
    base_model_name: str | None = None  # metadata: the base model's name, carried with the request
    tensorizer_config_dict: dict | None = None  # vLLM's tensorizer loading: not supported (a ValueError)

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise TypeError(f"lora_name must be a non-empty str, got {self.lora_name!r}")
        if isinstance(self.lora_int_id, bool) or not isinstance(self.lora_int_id, int):
            raise TypeError(f"lora_int_id must be an int, got {self.lora_int_id!r}")
        if self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be > 0, got {self.lora_int_id}")
        if not isinstance(self.lora_path, str):
            raise TypeError(f"lora_path must be a str, got {self.lora_path!r}")
        if not self.lora_path:
            raise ValueError(f"LoRA adapter {self.lora_name!r}: lora_path cannot be empty")
        if self.tensorizer_config_dict is not None:
            raise ValueError("tensorizer_config_dict (tensorizer-serialized adapters) is not supported; give a "
                             "PEFT folder as lora_path")

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)


def lora_request_list(lora_request: Any, n: int) -> list[LoRARequest | None]:
    """One LoRARequest (or None: the base model) per prompt from a ``lora_request`` argument: one for every
    prompt, or a list of ``n``."""
    if isinstance(lora_request, (list, tuple)):
        if len(lora_request) != n:
            raise ValueError(f"lora_request has {len(lora_request)} entries but there are {n} prompts")
        items = list(lora_request)
    else:
        items = [lora_request] * n
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, LoRARequest):
            raise TypeError(f"lora_request {i} must be a jaxllm.lora.LoRARequest or None, got {type(item).__name__}")
    return items
