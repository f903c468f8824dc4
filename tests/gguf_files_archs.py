"""Writing the families with their own HF tensor names (jaxllm/weights/gguf_archs.py) as llama.cpp's
convert_hf_to_gguf.py writes them: each converter class's metadata keys and tensor edits."""

from __future__ import annotations

import math
import os
import re

import gguf
import numpy as np
from gguf_files import _add_family_metadata, _checkpoint_tensors, _stack_experts, finish_gguf

# Families with their own HF names (jaxllm/weights/gguf_archs.py): HF architecture -> llama.cpp architecture
OWN_NAMES_ARCH = {"GPT2LMHeadModel": "gpt2", "PhiForCausalLM": "phi2", "StableLmForCausalLM": "stablelm",
                  "GPTNeoXForCausalLM": "gptneox", "OlmoForCausalLM": "olmo", "SeedOssForCausalLM": "seed_oss",
                  "NemotronForCausalLM": "nemotron", "Glm4ForCausalLM": "glm4", "Exaone4ForCausalLM": "exaone4",
                  "Ernie4_5ForCausalLM": "ernie4_5", "Cohere2ForCausalLM": "cohere2",
                  "GraniteMoeForCausalLM": "granitemoe", "GraniteMoeSharedForCausalLM": "granitemoe",
                  "FalconForCausalLM": "falcon", "Ernie4_5_MoeForCausalLM": "ernie4_5-moe",
                  "DbrxForCausalLM": "dbrx", "PhimoeForCausalLM": "phimoe"}


def _own_names_metadata(w: gguf.GGUFWriter, arch: str, cfg) -> None:
    """The keys each family's converter class writes (convert_hf_to_gguf.py's set_gguf_parameters)."""
    rope = getattr(cfg, "rope_parameters", None) or {}
    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    if arch == "falcon":  # FalconModel: a fixed context, no rope keys, kv heads from config.json's num_kv_heads
        for add, value in ((w.add_context_length, 2048), (w.add_embedding_length, hidden), (w.add_head_count, heads),
                           (w.add_feed_forward_length, 4 * hidden), (w.add_block_count, cfg.num_hidden_layers),
                           (w.add_head_count_kv, _falcon_kv_heads(cfg)), (w.add_layer_norm_eps, cfg.layer_norm_epsilon)):
            add(value)
        return
    if arch == "dbrx":  # DbrxModel: the nested attn_config / ffn_config
        a, f = cfg.attn_config, cfg.ffn_config
        for add, value in ((w.add_block_count, cfg.n_layers), (w.add_context_length, cfg.max_seq_len),
                           (w.add_embedding_length, cfg.d_model), (w.add_feed_forward_length, f.ffn_hidden_size),
                           (w.add_head_count, cfg.n_heads), (w.add_head_count_kv, a.kv_n_heads),
                           (w.add_rope_freq_base, a.rope_theta), (w.add_clamp_kqv, a.clip_qkv),
                           (w.add_expert_count, f.moe_num_experts), (w.add_expert_used_count, f.moe_top_k),
                           (w.add_layer_norm_eps, 1e-5)):
            add(value)
        return
    if arch == "phimoe":  # Phi3MiniModel's and PhiMoeModel's keys (the longrope factors: write_own_names_as_gguf)
        _phimoe_metadata(w, cfg)
        return
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(4 * hidden if arch in ("gpt2", "phi2") else cfg.intermediate_size)
    w.add_head_count(heads)
    if arch not in ("gpt2", "gptneox"):
        w.add_head_count_kv(cfg.num_key_value_heads)
    if "partial_rotary_factor" in rope:  # (GLM-4's converter: of head_dim; the others: of hidden / heads)
        of = cfg.head_dim * heads if arch == "glm4" else hidden
        w.add_rope_dimension_count(int(rope["partial_rotary_factor"] * of) // heads)
    if arch in ("stablelm", "gptneox"):
        w.add_parallel_residual(cfg.use_parallel_residual)
    eps = {"gpt2": "layer_norm_epsilon", "nemotron": "norm_eps"}.get(arch, "layer_norm_eps")
    w.add_layer_norm_eps(getattr(cfg, eps, 1e-5))
    if arch == "granitemoe":  # LlamaModel's and GraniteModel's keys
        _add_family_metadata(w, "granite", cfg)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        if getattr(cfg, "shared_intermediate_size", None):
            w.add_expert_shared_feed_forward_length(cfg.shared_intermediate_size)
    if arch == "ernie4_5-moe":  # Ernie4_5MoeModel's keys
        for add, value in ((w.add_expert_count, cfg.moe_num_experts), (w.add_expert_used_count, cfg.moe_k),
                           (w.add_interleave_moe_layer_step, cfg.moe_layer_interval),
                           (w.add_leading_dense_block_count, cfg.moe_layer_start_index),
                           (w.add_expert_feed_forward_length, cfg.moe_intermediate_size),
                           (w.add_expert_shared_count, cfg.moe_num_shared_experts)):
            add(value)
    if arch in ("olmo", "seed_oss", "nemotron", "glm4", "exaone4", "ernie4_5", "ernie4_5-moe", "cohere2"):
        w.add_rope_freq_base(rope["rope_theta"])
        if getattr(cfg, "head_dim", None):
            w.add_key_length(cfg.head_dim)
            w.add_value_length(cfg.head_dim)
        if getattr(cfg, "rms_norm_eps", None) or arch == "nemotron":
            w.add_layer_norm_rms_eps(getattr(cfg, "rms_norm_eps", None) or cfg.norm_eps)
    if arch in ("exaone4", "cohere2"):
        w.add_vocab_size(cfg.vocab_size)
        w.add_sliding_window(cfg.sliding_window)
    if arch == "exaone4":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    if arch == "cohere2":
        w.add_logit_scale(cfg.logit_scale)
        w.add_rope_dimension_count(cfg.hidden_size // heads)
    if arch == "olmo" and cfg.clip_qkv is not None:
        w.add_clamp_kqv(cfg.clip_qkv)
    if arch == "nemotron":
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)


def _phimoe_metadata(w: gguf.GGUFWriter, cfg) -> None:
    rope, hidden, heads = cfg.rope_parameters, cfg.hidden_size, cfg.num_attention_heads
    scale = cfg.max_position_embeddings / rope["original_max_position_embeddings"]
    for add, value in ((w.add_context_length, cfg.max_position_embeddings), (w.add_embedding_length, hidden),
                       (w.add_rope_scaling_orig_ctx_len, rope["original_max_position_embeddings"]),
                       (w.add_feed_forward_length, cfg.intermediate_size), (w.add_block_count, cfg.num_hidden_layers),
                       (w.add_head_count, heads), (w.add_head_count_kv, cfg.num_key_value_heads),
                       (w.add_layer_norm_rms_eps, cfg.rms_norm_eps), (w.add_rope_dimension_count, hidden // heads),
                       (w.add_rope_freq_base, rope["rope_theta"]), (w.add_sliding_window, cfg.sliding_window or 0),
                       (w.add_rope_scaling_attn_factors,
                        math.sqrt(1 + math.log(scale) / math.log(rope["original_max_position_embeddings"]))),
                       (w.add_expert_used_count, cfg.num_experts_per_tok), (w.add_expert_count, cfg.num_local_experts)):
        add(value)
    w.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], np.float32))
    w.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], np.float32))


def _own_names_tensor(arch: str, name: str, arr: np.ndarray, cfg) -> np.ndarray:
    """One HF tensor as the family's converter class edits it (modify_tensors)."""
    from jaxllm.weights.gguf import permute_qk

    if arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        return arr.T
    if arch == "gptneox" and ".query_key_value." in name:  # [H, 3, Dh] rows -> [q | k | v]
        h = cfg.num_attention_heads
        return arr.reshape(h, 3, -1, *arr.shape[1:]).swapaxes(0, 1).reshape(arr.shape)
    if arch in ("olmo", "granitemoe") and name.endswith(("q_proj.weight", "k_proj.weight")):
        return permute_qk(arr, cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads)
    if arch == "nemotron" and name.endswith("norm.weight"):
        return arr + 1.0
    if arch == "falcon" and ".query_key_value." in name:  # per kv head [H / K + 2, Dh] -> [q | k | v]
        kv = _falcon_kv_heads(cfg)
        qkv = arr.reshape(kv, cfg.num_attention_heads // kv + 2, -1, *arr.shape[1:])
        parts = (qkv[:, :-2], qkv[:, -2:-1], qkv[:, -1:])
        return np.concatenate([p.reshape(-1, *arr.shape[1:]) for p in parts])
    return arr


def _falcon_kv_heads(cfg) -> int:
    """Falcon's kv heads as the converter reads them: released multi-query configs carry no num_kv_heads."""
    if cfg.new_decoder_architecture:
        return cfg.num_kv_heads
    return 1 if cfg.multi_query else cfg.num_attention_heads


def write_own_names_as_gguf(path, hf_dir, cfg, qtype: str | None = None) -> str:
    """``write_hf_as_gguf`` for the families of OWN_NAMES_ARCH (float32 tensors): GPT-2's causal-mask buffers
    dropped, StableLM's per-head q/k norms stacked [H, Dh], each family's converter edits; ``qtype``: 2-D weights
    of whole blocks quantized to that GGUF type after the edits, as llama-quantize does. Returns the arch."""
    arch = OWN_NAMES_ARCH[cfg.architectures[0]]
    w = gguf.GGUFWriter(os.fspath(path), arch)
    _own_names_metadata(w, arch, cfg)
    tensors, _ = _stack_experts(_checkpoint_tensors(hf_dir), {})
    norms = re.compile(r"^(.+\.[qk]_layernorm)\.norms\.(\d+)\.weight$")
    for stacked in sorted({m.group(1) for m in map(norms.match, tensors) if m}):
        n = len([k for k in tensors if k.startswith(f"{stacked}.norms.")])
        tensors[f"{stacked}.weight"] = np.stack([tensors.pop(f"{stacked}.norms.{h}.weight") for h in range(n)])
    names = gguf.get_tensor_name_map({a: n for n, a in gguf.MODEL_ARCH_NAMES.items()}[arch], cfg.num_hidden_layers)
    for name, arr in tensors.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        name = name.replace("e_score_correction_bias", "e_score_correction.bias")  # as the converter renames it
        arr = np.ascontiguousarray(_own_names_tensor(arch, name, arr.astype(np.float32), cfg))
        if name.endswith("input_linear.weight"):  # GraniteMoe's fused gate | up, split as the converter does
            layer, kind = name.split(".")[2], "exps" if "block_sparse_moe" in name else "shexp"
            gate, up = np.split(arr, 2, axis=-2)
            w.add_tensor(f"blk.{layer}.ffn_gate_{kind}.weight", np.ascontiguousarray(gate))
            w.add_tensor(f"blk.{layer}.ffn_up_{kind}.weight", np.ascontiguousarray(up))
            continue
        if arch == "dbrx" and ".ffn.experts.mlp." in name:  # [E * F, D] -> [E, F, D] (w2: [E, D, F])
            f = cfg.ffn_config
            arr = arr.reshape(f.moe_num_experts, f.ffn_hidden_size, -1)
            arr, name = np.ascontiguousarray(arr.swapaxes(1, 2) if name.endswith("w2") else arr), name + ".weight"
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if qtype is not None and arr.ndim == 2 and arr.shape[1] % 32 == 0:  # (quantized after the edits)
            q = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gname, gguf.quants.quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(gname, arr)
    finish_gguf(w)
    return arch


def copy_gguf(src, dst, drop: tuple[str, ...] = (), extra: dict | None = None) -> None:
    """The float32 GGUF ``src`` rewritten to ``dst`` without the tensors ``drop`` and with ``extra`` ({name:
    array}) added: files a converter would not write, for the loader's errors."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(os.fspath(dst), arch)
    for field in reader.fields.values():
        if field.name.startswith(f"{arch}."):
            w.add_key_value(field.name, field.contents(), field.types[0])
    for t in reader.tensors:
        if t.name not in drop:
            w.add_tensor(t.name, np.asarray(t.data).reshape(tuple(reversed(t.shape.tolist()))))
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    finish_gguf(w)


def assert_gguf_matches(path, hf, architecture: str) -> None:
    """The GGUF ``path`` names ``architecture`` and gives the transformers model ``hf``'s fp32 logits (1e-4
    relative) and its greedy token at every position."""
    from hf_models import hf_logits, relative_error

    import jaxllm
    from jaxllm.weights.gguf import GGUFCheckpoint

    assert GGUFCheckpoint(path).hf_config["architectures"] == [architecture]
    ids = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 20)).astype(np.int32)
    ours, ref = np.asarray(jaxllm.load_model(path)(ids)), hf_logits(hf, ids)
    assert relative_error(ours, ref) <= 1e-4
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def assert_generate_matches(path, hf_dir, hf) -> None:
    """``LLM(path, tokenizer=hf_dir)`` (vLLM's way of serving a GGUF): greedy tokens as transformers' ``hf``."""
    import transformers
    from hf_models import hf_greedy

    from jaxllm import LLM, SamplingParams

    llm = LLM(str(path), tokenizer=str(hf_dir), max_num_seqs=2, max_num_batched_tokens=32, max_model_len=64,
              enforce_eager=True)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    prompts = ["Hello world, the quick brown fox", "emoji 😀 family"]
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        assert list(out.outputs[0].token_ids) == hf_greedy(hf, tok.encode(prompt), 5), prompt
