"""Checkpoint key maps of the dense families of ``jaxllm.config_dense`` (OLMo, GLM, GLM-4, Nemotron).

Each family's parameters are the shared decoder's (jaxllm.models.llama), so its map is ``llama_family_map``'s
with the keys renamed to the family's, less what it lacks, plus what only it has:

- OLMo: no norm weights at all (its LayerNorms are non-parametric).
- GLM / GLM-4: the fused ``mlp.gate_up_proj`` [2F, D] (gate rows first) split into our gate_up [D, 2, F];
  GLM-4's norms are ``input_layernorm``, ``post_self_attn_layernorm`` (after attention),
  ``post_attention_layernorm`` (before the MLP) and ``post_mlp_layernorm``.
- Nemotron: the plain MLP's ``up_proj`` / ``down_proj`` (our c_fc / c_proj).
"""

from __future__ import annotations

from jaxllm.config import ModelConfig
from jaxllm.config_dense import GLM, GLM4, NEMOTRON
from jaxllm.weights.mappings import Target, _linear, llama_family_map

# per family: layer-relative renames (ours -> theirs; the first matching prefix wins)
_LAYER_RENAMES = {
    GLM4: {"post_attention_layernorm": "post_self_attn_layernorm", "pre_feedforward_layernorm":
           "post_attention_layernorm", "post_feedforward_layernorm": "post_mlp_layernorm"},
    NEMOTRON: {"mlp.c_fc": "mlp.up_proj", "mlp.c_proj": "mlp.down_proj"},
}


def _rename(key: str, layer: dict[str, str]) -> str:
    if not key.startswith("model.layers."):
        return key
    index, rest = key[len("model.layers."):].split(".", 1)
    for old, new in layer.items():
        if rest.startswith(old + "."):
            return f"model.layers.{index}.{new}{rest[len(old):]}"
    return key


def _fused_gate_up(cfg: ModelConfig, m: dict) -> None:
    """Replace the gate / up keys of every layer by the fused ``gate_up_proj`` [2F, D]."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}.mlp."
        del m[p + "gate_proj.weight"], m[p + "up_proj.weight"]
        m[p + "gate_up_proj.weight"] = Target(("layers", i, "mlp", "gate_up"), (2 * f, d), _linear(2, f))


def dense_family_map(cfg: ModelConfig) -> dict[str, Target | tuple[Target, ...]]:
    """The checkpoint keys of one of these families (module docstring)."""
    if cfg.quantization not in (None, "int8", "fp8") or cfg.quant_from_checkpoint:  # (load-time int8 / fp8 only)
        raise ValueError(f"quantization={cfg.quantization!r} checkpoints of {cfg.architecture} are not supported; "
                         "load the unquantized checkpoint (optionally with quantization='int8' or 'fp8')")
    arch = cfg.architecture
    layer = _LAYER_RENAMES.get(arch, {})
    m = {_rename(key, layer): target for key, target in llama_family_map(cfg).items()
         if cfg.norm_weight or not _is_norm_key(key)}
    if arch in (GLM, GLM4):
        _fused_gate_up(cfg, m)
    return m


def _is_norm_key(key: str) -> bool:
    """A decoder-layer or final norm's weight / bias (not a q/k norm)."""
    return key.startswith("model.norm.") or (key.endswith(("layernorm.weight", "layernorm.bias"))
                                             and ".self_attn." not in key)
