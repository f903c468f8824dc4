"""Config fields of the classic research families read from a HF ``config.json`` (no jax here): GPT-2,
GPT-NeoX (Pythia), Phi (phi-1/1.5/2), StableLM and OPT.

``classic_hf`` rewrites each family's own spellings to the names the shared parsing reads (``hidden_size``,
``num_hidden_layers``, ``intermediate_size``, ``rms_norm_eps`` as the LayerNorm epsilon, ``attention_bias``,
``mlp_bias``, ``partial_rotary_factor``, ``rope_theta``) with transformers' defaults for the fields a config may
leave out, so ``check_hf_config`` and ``ModelConfig.from_hf`` read them like any other family.
``classic_family_fields`` gives the ModelConfig fields only these families set:

- GPT-2: learned absolute positions (``wpe``), LayerNorms with biases, a plain gelu-tanh MLP, biases on every
  linear layer, tied lm_head, no rope.
- GPT-NeoX: partial rotary (``rotary_pct``), two LayerNorms read in parallel by attention and MLP
  (``use_parallel_residual``) or in sequence, biased plain MLP, untied ``embed_out``.
- Phi: attention and MLP in parallel from one LayerNorm, partial rotary, biased q/k/v/dense and fc1/fc2, a
  final LayerNorm, an lm_head with a bias, optional q/k LayerNorm over each head.
- StableLM: LayerNorms with biases, partial rotary, q/k/v biases (``use_qkv_bias``), the gated MLP, parallel
  (one norm) or sequential blocks, optional per-head q/k LayerNorm (a weight per head, no bias).
- OPT: learned positions offset by 2, ReLU fc1/fc2, pre-norm (``do_layer_norm_before``) or post-norm blocks,
  an embedding of ``word_embed_proj_dim`` projected in and out of the model dim, biases by ``enable_bias``.
- GPT-J: attention and MLP in parallel from one LayerNorm, ``rotary_dim`` leading dims of each head rotated in
  adjacent pairs (rotate_every_two) with base 10000, unbiased q/k/v/out, biased fc_in/fc_out, an lm_head bias.
- Falcon: a fused ``query_key_value`` (grouped per kv head with ``new_decoder_architecture``, one shared k/v head
  with ``multi_query``, else interleaved per head), rope over the whole head, LayerNorms with biases, a plain
  gelu MLP, every linear layer biased by ``bias``; attention and MLP in parallel from one norm
  (``parallel_attn``) or from two (``ln_attn`` / ``ln_mlp``: the new architecture's
  ``num_ln_in_parallel_attn`` = 2), or in sequence. ALiBi checkpoints (``alibi``) are refused.
"""

from __future__ import annotations

from typing import Any

GPT2 = "GPT2LMHeadModel"
GPT_NEOX = "GPTNeoXForCausalLM"
PHI = "PhiForCausalLM"
STABLELM = "StableLmForCausalLM"
OPT = "OPTForCausalLM"
GPTJ = "GPTJForCausalLM"
FALCON = "FalconForCausalLM"
CLASSIC_ARCHS = (GPT2, GPT_NEOX, PHI, STABLELM, OPT, GPTJ, FALCON)
CLASSIC_MODEL_TYPES = {"gpt2": GPT2, "gpt_neox": GPT_NEOX, "phi": PHI, "stablelm": STABLELM, "opt": OPT, "gptj": GPTJ,
                       "falcon": FALCON}

# (family name, shared name) pairs; the family's value wins when both are present
_RENAMES = {
    GPT2: (("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), ("n_head", "num_attention_heads"),
           ("n_positions", "max_position_embeddings"), ("n_inner", "intermediate_size"),
           ("layer_norm_epsilon", "rms_norm_eps"), ("activation_function", "hidden_act")),
    GPT_NEOX: (("layer_norm_eps", "rms_norm_eps"), ("rotary_pct", "partial_rotary_factor"),
               ("rotary_emb_base", "rope_theta")),
    PHI: (("layer_norm_eps", "rms_norm_eps"),),
    STABLELM: (("layer_norm_eps", "rms_norm_eps"),),
    OPT: (("ffn_dim", "intermediate_size"), ("activation_function", "hidden_act")),
    GPTJ: (("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), ("n_head", "num_attention_heads"),
           ("n_positions", "max_position_embeddings"), ("n_inner", "intermediate_size"),
           ("layer_norm_epsilon", "rms_norm_eps"), ("activation_function", "hidden_act")),
    FALCON: (("n_embed", "hidden_size"), ("layer_norm_epsilon", "rms_norm_eps"), ("activation", "hidden_act"),
             ("ffn_hidden_size", "intermediate_size")),
}

# transformers' config-class defaults (the shared names)
_DEFAULTS: dict[str, dict[str, Any]] = {
    GPT2: {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 1024,
           "rms_norm_eps": 1e-5, "hidden_act": "gelu_new", "tie_word_embeddings": True},
    GPT_NEOX: {"rms_norm_eps": 1e-5, "hidden_act": "gelu", "partial_rotary_factor": 0.25, "rope_theta": 10000.0,
               "max_position_embeddings": 2048, "attention_bias": True, "use_parallel_residual": True,
               "tie_word_embeddings": False},
    PHI: {"rms_norm_eps": 1e-5, "hidden_act": "gelu_new", "partial_rotary_factor": 0.5,
          "max_position_embeddings": 2048, "tie_word_embeddings": False},
    STABLELM: {"rms_norm_eps": 1e-5, "hidden_act": "silu", "partial_rotary_factor": 0.25,
               "max_position_embeddings": 4096, "tie_word_embeddings": False},
    OPT: {"rms_norm_eps": 1e-5, "hidden_act": "relu", "max_position_embeddings": 2048, "tie_word_embeddings": True,
          "do_layer_norm_before": True, "enable_bias": True},
    GPTJ: {"hidden_size": 4096, "num_hidden_layers": 28, "num_attention_heads": 16, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-5, "hidden_act": "gelu_new", "tie_word_embeddings": False, "rotary_dim": 64},
    FALCON: {"hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71, "rms_norm_eps": 1e-5,
             "hidden_act": "gelu", "max_position_embeddings": 2048, "tie_word_embeddings": True, "alibi": False,
             "new_decoder_architecture": False, "multi_query": True, "parallel_attn": True, "bias": False},
}

# config fields whose non-default values these families do not implement: (field, the supported value)
_UNSUPPORTED = {
    GPT2: (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
           ("scale_attn_weights", True), ("add_cross_attention", False)),
    OPT: (("layer_norm_elementwise_affine", True), ("_remove_final_layer_norm", False)),
    FALCON: (("alibi", False),),
}


def classic_arch(hf: dict[str, Any]) -> str | None:
    """The classic family of a config.json dict (by ``architectures``, else ``model_type``: also for the
    family's pooling forms, ``GPT2Model`` / ``OPTForSequenceClassification``), or None."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs and archs[0] in CLASSIC_ARCHS else CLASSIC_MODEL_TYPES.get(hf.get("model_type", ""))
    return arch if arch in CLASSIC_ARCHS else None


def classic_hf(hf: dict[str, Any]) -> dict[str, Any]:
    """``hf`` with a classic family's fields under the shared names and its defaults filled in (other families:
    unchanged). A non-default setting these families do not implement is a ValueError naming it."""
    arch = classic_arch(hf)
    if arch is None:
        return hf
    for key, supported in _UNSUPPORTED.get(arch, ()):
        if hf.get(key, supported) != supported:
            raise ValueError(f"{arch}: {key}={hf[key]!r} is not supported (only {supported!r})")
    # transformers' modeling code of these families derives head_dim = hidden_size / heads and (GPT-2, GPT-NeoX,
    # OPT) has one kv head per head whatever a config.json states
    drop = ("head_dim", "num_key_value_heads") if arch in (GPT2, GPT_NEOX, OPT, GPTJ, FALCON) else ("head_dim",)
    out = {key: value for key, value in hf.items() if key not in drop}
    for family_name, shared in _RENAMES[arch]:
        if out.get(family_name) is not None:
            out[shared] = out[family_name]
    for key, value in _DEFAULTS[arch].items():
        if out.get(key) is None:
            out[key] = value
    if arch in (GPT2, GPTJ, FALCON) and out.get("intermediate_size") is None:  # n_inner None: 4 * n_embd
        out["intermediate_size"] = 4 * int(out["hidden_size"])
    if arch == GPTJ:  # (an explicit null rotary_dim: the whole hidden size)
        _gptj_rotary(out, int(out["hidden_size"]) if "rotary_dim" in hf and hf["rotary_dim"] is None else None)
    if arch == GPT2:
        out["attention_bias"] = out["mlp_bias"] = True
    elif arch == GPT_NEOX:
        out["mlp_bias"] = True
    elif arch == PHI:
        out["attention_bias"] = out["mlp_bias"] = True
    elif arch == OPT:
        out["attention_bias"] = out["mlp_bias"] = bool(out["enable_bias"])
    elif arch == GPTJ:
        out["attention_bias"], out["mlp_bias"] = False, True
    elif arch == FALCON:
        _falcon_layout(out)
    return out


def _gptj_rotary(out: dict[str, Any], whole: int | None) -> None:
    """GPT-J's rotation: ``rotary_dim`` (``whole`` when the config's is null) leading dims of each head (as a
    partial rotary factor), base 10000 whatever a rope field says (its modeling code reads none); a rotary_dim
    that is not an even number of at most head_dim dims is a ValueError naming it."""
    head_dim = int(out["hidden_size"]) // int(out["num_attention_heads"])
    dim = out["rotary_dim"] if whole is None else whole
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= head_dim or dim % 2:
        raise ValueError(f"{GPTJ}: rotary_dim={dim!r} is not supported (an even number of dims, at most the "
                         f"head dim {head_dim})")
    for key in ("rope_scaling", "rope_parameters"):
        out.pop(key, None)
    out["rope_theta"] = 10000.0
    out["partial_rotary_factor"] = dim / head_dim


def _falcon_layout(out: dict[str, Any]) -> None:
    """Falcon's kv heads (``num_kv_heads`` with the new architecture, 1 with ``multi_query``, else one per head),
    biases and norm placement (``falcon_placement``: "parallel_two", "parallel" or "pre"); a layer layout
    transformers' Falcon does not build is a ValueError naming it."""
    new, parallel = bool(out["new_decoder_architecture"]), bool(out["parallel_attn"])
    num_ln = out.get("num_ln_in_parallel_attn")
    if new and not parallel:
        raise ValueError(f"{FALCON}: new_decoder_architecture=True with parallel_attn=False is not supported")
    if num_ln not in (None, 1, 2) or (not new and parallel and num_ln not in (None, 1)):
        raise ValueError(f"{FALCON}: num_ln_in_parallel_attn={num_ln!r} is not supported (1 or 2, and 2 only with "
                         "new_decoder_architecture)")
    heads = int(out["num_attention_heads"])
    out["num_key_value_heads"] = int(out.get("num_kv_heads") or heads) if new else (1 if out["multi_query"] else heads)
    out["attention_bias"] = out["mlp_bias"] = bool(out["bias"])
    two = new and (num_ln is None or num_ln == 2)
    out["falcon_placement"] = "parallel_two" if two else ("parallel" if parallel else "pre")


def classic_family_fields(hf: dict[str, Any], arch: str) -> dict[str, Any]:
    """The ModelConfig fields only these families set (an empty dict for the others); ``hf`` went through
    ``classic_hf``."""
    if arch not in CLASSIC_ARCHS:
        return {}
    fields: dict[str, Any] = {"norm_type": "layer", "norm_bias": True}
    if arch in (GPT2, OPT):
        fields.update(position_embedding="learned", rope_layers=(False,) * int(hf["num_hidden_layers"]),
                      mlp_type="plain", attention_out_bias=bool(hf["attention_bias"]))
    if arch == OPT:
        proj = int(hf.get("word_embed_proj_dim") or hf["hidden_size"])
        fields.update(position_offset=2, norm_placement="pre" if hf["do_layer_norm_before"] else "post_residual",
                      final_norm=bool(hf["do_layer_norm_before"]),
                      embed_proj_dim=0 if proj == int(hf["hidden_size"]) else proj)
    elif arch == GPT_NEOX:
        fields.update(mlp_type="plain", attention_out_bias=bool(hf["attention_bias"]),
                      norm_placement="parallel_two" if hf["use_parallel_residual"] else "pre")
    elif arch == PHI:
        fields.update(mlp_type="plain", norm_placement="parallel", attention_out_bias=True, lm_head_bias=True,
                      qk_norm="head" if hf.get("qk_layernorm") else None)
    elif arch == STABLELM:
        fields.update(attention_bias=bool(hf.get("use_qkv_bias")), attention_out_bias=False,
                      norm_placement="parallel" if hf.get("use_parallel_residual") else "pre",
                      qk_norm="per_head" if hf.get("qk_layernorm") else None)
    elif arch == GPTJ:
        fields.update(mlp_type="plain", norm_placement="parallel", attention_out_bias=False, lm_head_bias=True,
                      rope_interleaved=True)
    elif arch == FALCON:
        fields.update(mlp_type="plain", norm_placement=hf["falcon_placement"], attention_out_bias=hf["attention_bias"])
    return fields
