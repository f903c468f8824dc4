"""Writing GGUF files in tests as llama.cpp's converter does: the hyperparameters every architecture carries, and
the file's sections in order. Each test adds its own tokenizer, rope and tensor entries in between."""

from __future__ import annotations

import os
import re

import gguf
import numpy as np


def gguf_writer(path, arch: str, cfg) -> gguf.GGUFWriter:
    """A writer for ``arch`` holding the block, context, embedding, feed-forward, head counts, RMSNorm epsilon
    and vocabulary size of the transformers config ``cfg``."""
    w = gguf.GGUFWriter(os.fspath(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    if getattr(cfg, "rms_norm_eps", None) is not None:  # (LayerNorm families write their own epsilon)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    return w


def finish_gguf(w: gguf.GGUFWriter) -> None:
    """Write the header, the key-value metadata and the tensors, and close the file."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# llama.cpp's arch name of each HF architecture (Mistral and Mixtral convert to "llama"), as convert_hf_to_gguf.py
CONVERTER_ARCH = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "MixtralForCausalLM": "llama",
                  "GraniteForCausalLM": "granite", "Qwen2MoeForCausalLM": "qwen2moe", "OlmoeForCausalLM": "olmoe",
                  "SmolLM3ForCausalLM": "smollm3", "Starcoder2ForCausalLM": "starcoder2",
                  "CohereForCausalLM": "command-r",
                  "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3moe",
                  "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
                  "Phi3ForCausalLM": "phi3", "Olmo2ForCausalLM": "olmo2",
                  "Olmo3ForCausalLM": "olmo2"}
PERMUTED = ("llama", "granite", "smollm3")  # the converter's LlamaModel subclasses: q/k rows permuted
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.weight$")


def _checkpoint_tensors(hf_dir) -> dict:
    """Every tensor of the saved HF checkpoint, under the names its files use (per-expert MoE keys)."""
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(hf_dir, f)))
    return out


def _stack_experts(tensors: dict, types: dict) -> tuple[dict, dict]:
    """Per-expert weights -> llama.cpp's stacked [E, out, in] tensors under the HF name the gguf map knows
    (``model.layers.N.<block>.experts.<proj>.weight``), as the converter merges them; ``types`` ({HF name: GGUF
    type}) follows (a stack has its experts' type)."""
    out, groups, out_types = {}, {}, dict(types)
    for name, arr in tensors.items():
        m = _EXPERT.match(name)
        if m is None:
            out[name] = arr
        else:
            groups.setdefault((m.group(1), m.group(2), m.group(4)), {})[int(m.group(3))] = (name, arr)
    for (layer, block, proj), experts in groups.items():
        stacked = f"model.layers.{layer}.{block}.experts.{proj}.weight"
        out[stacked] = np.stack([experts[j][1] for j in range(len(experts))])
        if experts[0][0] in types:
            out_types[stacked] = types[experts[0][0]]
    return out, out_types


# Byte offsets of the fp16 fields that scale a whole block (d, and dmin where the type has one), per K type: the
# gguf package cannot encode K types, so tests fill their blocks with random bytes and pick these fields.
K_SCALE_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def encode(arr: np.ndarray, type_name: str, rng: np.random.Generator) -> np.ndarray:
    """A 2-D float32 weight [rows, cols] as GGUF blocks of ``type_name`` (raw, as the file stores them): the gguf
    package's quantizer, or for K types random blocks whose scale fields make values of magnitude ~0.1."""
    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name not in K_SCALE_FIELDS:
        return gguf.quants.quantize(arr, qtype)
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (arr.size // block, nbytes), dtype=np.uint8)
    fields = K_SCALE_FIELDS[type_name]
    for off in fields:
        raw[:, off:off + 2] = rng.uniform(-1, 1, (len(raw), 1)).astype(np.float16).view(np.uint8)
    peak = np.abs(gguf.quants.dequantize(raw, qtype)).max()
    for off in fields:
        half = raw[:, off:off + 2].copy().view(np.float16)
        raw[:, off:off + 2] = (half.astype(np.float32) * (0.1 / peak)).astype(np.float16).view(np.uint8)
    return raw.reshape(arr.shape[0], -1)


def encode_checkpoint(hf_dir, ref_dir, type_name: str, seed: int = 0) -> dict:
    """Every 2-D weight of the HF checkpoint ``hf_dir`` (rows a whole number of blocks) encoded as ``type_name``:
    returns {HF name: (type_name, raw blocks)} for ``write_hf_as_gguf`` and saves the dequantized values (gguf's
    own dequantizer) as the HF checkpoint ``ref_dir``, the reference a loader of the GGUF must match."""
    import shutil

    from safetensors.numpy import save_file

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]
    rng, encoded, ref = np.random.default_rng(seed), {}, {}
    for name, arr in _checkpoint_tensors(hf_dir).items():
        if arr.ndim == 2 and arr.shape[1] % block == 0:
            raw = encode(arr.astype(np.float32), type_name, rng)
            encoded[name] = (type_name, raw)
            arr = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(arr.shape)
        ref[name] = np.ascontiguousarray(arr, dtype=np.float32)
    os.makedirs(ref_dir, exist_ok=True)
    save_file(ref, os.path.join(ref_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(hf_dir, "config.json"), ref_dir)
    return encoded


def write_hf_as_gguf(path, hf_dir, cfg, encoded: dict | None = None, per_expert: bool = False) -> str:
    """The saved HF checkpoint ``hf_dir`` (transformers config ``cfg``) written as llama.cpp's convert_hf_to_gguf.py
    writes it: the gguf package's tensor-name map, llama's q/k row permutation, Gemma norms + 1, MoE experts
    stacked, and the metadata keys the converter sets. Tensors are float32 except those in ``encoded`` ({HF name:
    (type name, raw blocks [rows, row bytes])}, see ``encode_checkpoint``). ``per_expert``: MoE experts one tensor
    each (``blk.N.ffn_gate.E.weight``, llama.cpp's first Mixtral layout). Returns the llama.cpp architecture."""
    from jaxllm.weights.gguf import permute_qk

    arch = CONVERTER_ARCH[cfg.architectures[0]]
    w = gguf_writer(path, arch, cfg)
    _add_family_metadata(w, arch, cfg)
    tensors, types = _checkpoint_tensors(hf_dir), {}
    for name, (type_name, raw) in (encoded or {}).items():
        tensors[name], types[name] = raw, type_name
    model_arch = {name: a for a, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    names = gguf.get_tensor_name_map(model_arch, cfg.num_hidden_layers)
    if not per_expert:
        tensors, types = _stack_experts(tensors, types)
    for name, arr in tensors.items():
        qtype = types.get(name, "F32")
        if qtype == "F32":
            arr = arr.astype(np.float32)
        if arch in PERMUTED and ".q_proj." in name:
            arr = permute_qk(arr, cfg.num_attention_heads)
        elif arch in PERMUTED and ".k_proj." in name:
            arr = permute_qk(arr, cfg.num_key_value_heads)
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            arr = arr + 1.0
        expert = _EXPERT.match(name)
        if expert:  # per_expert: w1/gate_proj -> ffn_gate.E, ...
            proj = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up"}.get(expert.group(4), "down")
            gname = f"blk.{expert.group(1)}.ffn_{proj}.{expert.group(3)}.weight"
        else:
            gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if qtype == "F32":
            w.add_tensor(gname, arr)
        else:
            w.add_tensor(gname, arr, raw_dtype=gguf.GGMLQuantizationType[qtype])
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type") == "longrope":  # Phi-3's factor lists travel as tensors
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], np.float32))
    finish_gguf(w)
    return arch


def _add_family_metadata(w: gguf.GGUFWriter, arch: str, cfg) -> None:
    """The converter's per-family keys: head and rope sizes, experts, Gemma's windows and soft-caps."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    w.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    experts = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    if experts:
        w.add_expert_count(experts)
        w.add_expert_used_count(cfg.num_experts_per_tok)
    if getattr(cfg, "moe_intermediate_size", None):
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    if getattr(cfg, "shared_expert_intermediate_size", None):
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)
    if arch == "starcoder2":
        w.add_layer_norm_eps(cfg.norm_epsilon)
    if arch == "command-r":
        w.add_layer_norm_eps(cfg.layer_norm_eps)
        w.add_logit_scale(cfg.logit_scale)
    if arch == "granite":
        w.add_attention_scale(cfg.attention_multiplier)
        w.add_embedding_scale(cfg.embedding_multiplier)
        w.add_residual_scale(cfg.residual_multiplier)
        w.add_logit_scale(cfg.logits_scaling)
    if arch in ("gemma2", "gemma3", "phi3") and getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "olmo2" and getattr(cfg, "sliding_window", None):  # OLMo 3
        w.add_sliding_window(cfg.sliding_window)
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if arch == "gemma3":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
        w.add_rope_freq_base_swa(cfg.rope_parameters["sliding_attention"]["rope_theta"])
    kind = rope.get("rope_type", "default")
    if kind in ("linear", "yarn"):
        w.add_rope_scaling_type(gguf.RopeScalingType(kind))
        w.add_rope_scaling_factor(rope["factor"])
    if kind == "yarn":
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
