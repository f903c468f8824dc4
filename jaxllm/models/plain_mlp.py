"""Starcoder2's MLP: c_fc -> activation -> c_proj, not gated, each with a bias when ``cfg.mlp_bias`` (also
GPT-2's, GPT-NeoX's, Phi's and OPT's), and the learned absolute positions of GPT-2 and OPT.

Shape letters: T tokens (any leading dims), D model dim, F ffn dim. c_fc [D, F] is column-parallel and c_proj
[F, D] row-parallel over the ``mlp`` axis, as the gated MLP's gate_up and down; both quantize like any linear
layer. LoRA targets the gated projections only (jaxllm.lora.layout), so these layers take no adapters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.layers import ACTIVATIONS, linear, linear_weight, param


class LearnedPositions(nnx.Module):
    """Absolute position embeddings ``table`` [max_position_embeddings + offset, D] (GPT-2's ``wpe``; OPT's
    table starts at row ``position_offset`` = 2). Positions are bounded by max_position_embeddings: the engine's
    max_model_len never exceeds it, and the dense forward refuses a longer input (``check_length``)."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        self.offset = cfg.position_offset
        self.max_positions = cfg.max_position_embeddings
        self.table = param((cfg.max_position_embeddings + cfg.position_offset, cfg.hidden_size), dtype,
                           (None, "embed"), rngs=rngs)

    def check_length(self, seq_len: int) -> None:
        if seq_len > self.max_positions:
            raise ValueError(f"{seq_len} tokens exceed the model's {self.max_positions} learned positions "
                             "(max_position_embeddings)")

    def __call__(self, positions: jax.Array) -> jax.Array:
        """int positions [...] -> [..., D]."""
        return jnp.take(self.table[...], positions + self.offset, axis=0, mode="clip")


class PlainMLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.c_fc = linear_weight((d, f), dtype, ("embed", "mlp"), 1, cfg, rngs)
        self.c_proj = linear_weight((f, d), dtype, ("mlp", "embed"), 1, cfg, rngs)
        self.c_fc_bias = param((f,), dtype, ("mlp",), init="zeros") if cfg.mlp_bias else None
        self.c_proj_bias = param((d,), dtype, ("norm",), init="zeros") if cfg.mlp_bias else None
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: jax.Array, lora=None) -> jax.Array:
        """x [..., D] -> [..., D]. ``lora`` must be None (the model reports supports_lora = False)."""
        if lora is not None:
            raise ValueError("LoRA adapters are not supported on the non-gated MLP (c_fc / c_proj)")
        with jax.named_scope("mlp"):
            h = linear(x, self.c_fc, "...d,df->...f")
            if self.c_fc_bias is not None:
                h = h + self.c_fc_bias[...]
            out = linear(self.act(h), self.c_proj, "...f,fd->...d")
            if self.c_proj_bias is not None:
                out = out + self.c_proj_bias[...]
            return out
