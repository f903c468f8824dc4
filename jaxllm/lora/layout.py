"""The slot-stack layout of LoRA adapters in our model (pure Python: the loader and the runner share it).

A (layer, target) pair's adapters live in ``a`` [*in, S, R] and ``b`` [S, R, *out]: S slots (slot 0 = no
adapter), R = max_lora_rank. Both are laid out so that the batched product is two plain GEMMs without a
transpose: [T, I] @ [I, S*R] and [T, S*R] @ [S*R, O] (jaxllm.ops.lora). The in/out dims are those of our projection weights (q heads split from the head
dim, the MLP's gate and up separate), with their logical axes, so the stacks shard like the base weights.
Shape letters: D model dim, F ffn dim, H q heads, K kv heads, Dh head dim.
"""

from __future__ import annotations

# PEFT target modules that adapters may train (every decoder layer has all of them)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def target_dims(cfg, target: str) -> tuple[tuple[int, ...], tuple, tuple[int, ...], tuple]:
    """(in dims, in logical axes, out dims, out logical axes) of one target projection in our layout."""
    d, f, h, k, dh = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return {
        "q_proj": ((d,), ("embed",), (h, dh), ("q_heads", "head_dim")),
        "k_proj": ((d,), ("embed",), (k, dh), ("kv_heads", "head_dim")),
        "v_proj": ((d,), ("embed",), (k, dh), ("kv_heads", "head_dim")),
        "o_proj": ((h, dh), ("q_heads", "head_dim"), (d,), ("embed",)),
        "gate_proj": ((d,), ("embed",), (f,), ("mlp",)),
        "up_proj": ((d,), ("embed",), (f,), ("mlp",)),
        "down_proj": ((f,), ("mlp",), (d,), ("embed",)),
    }[target]


def stack_shapes(cfg, target: str, num_slots: int, rank: int):
    """((a shape, a logical axes), (b shape, b logical axes)) of one (layer, target) slot stack."""
    in_dims, in_axes, out_dims, out_axes = target_dims(cfg, target)
    return (((*in_dims, num_slots, rank), (*in_axes, None, None)),
            ((num_slots, rank, *out_dims), (None, None, *out_axes)))
