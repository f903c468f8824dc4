"""Starcoder2's MLP: c_fc -> activation -> c_proj, not gated, each with a bias when ``cfg.mlp_bias``.

Shape letters: T tokens (any leading dims), D model dim, F ffn dim. c_fc [D, F] is column-parallel and c_proj
[F, D] row-parallel over the ``mlp`` axis, as the gated MLP's gate_up and down; both quantize like any linear
layer. LoRA targets the gated projections only (jaxllm.lora.layout), so these layers take no adapters.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxllm.config import ModelConfig
from jaxllm.models.layers import ACTIVATIONS, linear, linear_weight, param


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
