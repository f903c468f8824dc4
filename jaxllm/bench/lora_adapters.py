"""Random PEFT LoRA adapters for ``jaxllm bench --lora-adapters N``: every target module of every layer, small
random values, written as PEFT writes them (adapter_config.json + adapter_model.safetensors), so the benchmark
loads them through the same path as a user's adapters."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from safetensors.numpy import save_file

from jaxllm.lora import LoRARequest
from jaxllm.lora.layout import TARGETS, target_dims


def write_random_adapters(folder: str, cfg, num_adapters: int, rank: int, seed: int = 0) -> list[LoRARequest]:
    """``num_adapters`` rank-``rank`` float16 adapters for ``cfg`` under ``folder``; their LoRARequests."""
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(num_adapters):
        path = os.path.join(folder, f"adapter-{i}")
        os.makedirs(path, exist_ok=True)
        tensors = {}
        for layer in range(cfg.num_layers):
            for target in TARGETS:
                in_dims, _, out_dims, _ = target_dims(cfg, target)
                n_in, n_out = math.prod(in_dims), math.prod(out_dims)
                part = "self_attn" if target.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
                key = f"base_model.model.model.layers.{layer}.{part}.{target}"
                tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, n_in), np.float32)
                                                   / math.sqrt(n_in)).astype(np.float16)
                tensors[f"{key}.lora_B.weight"] = (0.01 * rng.standard_normal((n_out, rank), np.float32)
                                                   ).astype(np.float16)
        save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
        with open(os.path.join(path, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(TARGETS),
                       "bias": "none"}, f)
        requests.append(LoRARequest(f"adapter-{i}", i + 1, path))
    return requests
