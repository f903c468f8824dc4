"""Checkpoint keys of gpt-oss (``GptOssForCausalLM``) beyond the Llama-style ones: each layer's attention sinks
(``self_attn.sinks`` [H]) and its MoE block, whose experts are stored stacked (``mlp.experts.gate_up_proj``
[E, D, 2F] with gate and up interleaved on the last axis, ``gate_up_proj_bias`` [E, 2F] likewise,
``down_proj`` [E, F, D], ``down_proj_bias`` [E, D]) with a biased router (``mlp.router.weight`` [E, D],
``mlp.router.bias`` [E]). MXFP4 checkpoints reach this map already dequantized (jaxllm.weights.mxfp4)."""

from __future__ import annotations

from jaxllm.config import ModelConfig
from jaxllm.weights.mappings import Target, _same, _transpose


def _deinterleave(w):
    """[..., 2F] with gate at even and up at odd indices -> [..., 2, F] (gate 0, up 1): a numpy view."""
    f = w.shape[-1] // 2
    return w.reshape(*w.shape[:-1], f, 2).swapaxes(-1, -2)


def gpt_oss_expert_targets(cfg: ModelConfig, i: int) -> dict[str, Target]:
    """MoE layer ``i``: router [E, D] -> [D, E] and its bias [E]; gate_up [E, D, 2F] -> [E, D, 2, F] and its bias
    [E, 2F] -> [E, 2, F]; down [E, F, D] and its bias [E, D] as they are."""
    d, e, f = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    p, mlp = f"model.layers.{i}.mlp.", ("layers", i, "mlp")
    return {p + "router.weight": Target((*mlp, "router"), (e, d), _transpose),
            p + "router.bias": Target((*mlp, "router_logit_bias"), (e,), _same),
            p + "experts.gate_up_proj": Target((*mlp, "gate_up"), (e, d, 2 * f), _deinterleave),
            p + "experts.gate_up_proj_bias": Target((*mlp, "gate_up_bias"), (e, 2 * f), _deinterleave),
            p + "experts.down_proj": Target((*mlp, "down"), (e, f, d), _same),
            p + "experts.down_proj_bias": Target((*mlp, "down_bias"), (e, d), _same)}


def sink_targets(cfg: ModelConfig) -> dict[str, Target]:
    """Every layer's ``self_attn.sinks`` [H] (float32 in ours)."""
    return {f"model.layers.{i}.self_attn.sinks": Target(("layers", i, "self_attn", "sinks"), (cfg.num_heads,),
                                                        _same) for i in range(cfg.num_layers)}
