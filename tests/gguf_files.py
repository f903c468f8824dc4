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
                  "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3moe",
                  "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
                  "Phi3ForCausalLM": "phi3", "Olmo2ForCausalLM": "olmo2"}
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.weight$")


def _checkpoint_tensors(hf_dir) -> dict:
    """Every tensor of the saved HF checkpoint, under the names its files use (per-expert MoE keys)."""
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(os.listdir(hf_dir)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(hf_dir, f)))
    return out


def _stack_experts(tensors: dict) -> dict:
    """Per-expert weights -> llama.cpp's stacked [E, out, in] tensors under the HF name the gguf map knows
    (``model.layers.N.<block>.experts.<proj>.weight``), as the converter merges them."""
    out, groups = {}, {}
    for name, arr in tensors.items():
        m = _EXPERT.match(name)
        if m is None:
            out[name] = arr
        else:
            groups.setdefault((m.group(1), m.group(2), m.group(4)), {})[int(m.group(3))] = arr
    for (layer, block, proj), experts in groups.items():
        out[f"model.layers.{layer}.{block}.experts.{proj}.weight"] = np.stack(
            [experts[j] for j in range(len(experts))])
    return out


def write_hf_as_gguf(path, hf_dir, cfg, quantize=None, default_type: str = "F32") -> str:
    """The saved HF checkpoint ``hf_dir`` (transformers config ``cfg``) written as llama.cpp's convert_hf_to_gguf.py
    writes it: the gguf package's tensor-name map, llama's q/k row permutation, Gemma norms + 1, MoE experts
    stacked, and the metadata keys the converter sets. ``quantize``: {gguf tensor name: type} (one tensor's type),
    ``default_type``: every other 2-D weight's type (norms and 1-D tensors stay F32, as in llama.cpp). Returns the
    llama.cpp architecture name."""
    from jaxllm.weights.gguf import permute_qk

    hf_arch = cfg.architectures[0]
    arch = CONVERTER_ARCH[hf_arch]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope = rope.get("full_attention", rope)
    w = gguf_writer(path, arch, cfg)
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
    if arch in ("gemma2", "gemma3", "phi3") and getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    if arch == "gemma3":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    for name, arr in _stack_experts(_checkpoint_tensors(hf_dir)).items():
        arr = arr.astype(np.float32)
        if arch == "llama" and ".q_proj." in name:
            arr = permute_qk(arr, cfg.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            arr = permute_qk(arr, cfg.num_key_value_heads)
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            arr = arr + 1.0
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        qtype = (quantize or {}).get(gname, default_type if arr.ndim >= 2 else "F32")
        if qtype == "F32":
            w.add_tensor(gname, arr)
        else:
            q = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gname, gguf.quants.quantize(arr, q), raw_dtype=q)
    finish_gguf(w)
    return arch
