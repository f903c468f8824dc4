"""Read a llama.cpp GGUF file as if it were a HuggingFace checkpoint.

A GGUF holds the hyper-parameters and the tokenizer as metadata and every weight under llama.cpp's names,
often block-quantized (Q4_1, Q8_0, Q4_K, ...). ``GGUFCheckpoint`` translates all three into what the
safetensors path already understands, so the rest of jaxllm never sees GGUF:

- ``hf_config``: the dict a HF ``config.json`` of the same model would hold (goes through ``ModelConfig.from_hf``);
- ``tensors()``: ``(hf_name, float32 array in HF layout)`` one tensor at a time (the file is memory-mapped and
  each tensor is dequantized on demand, so peak host memory is one dense tensor, not the model);
- ``tokenizer()``: a ``transformers`` fast tokenizer rebuilt from the vocabulary, merges and chat template.

llama.cpp's converter permutes the rows of ``q_proj``/``k_proj`` of llama (granite, smollm3) models (it rotates pairs of
adjacent dimensions, HF rotates the two halves of each head); ``tensors()`` undoes that. Qwen2/Qwen3, Gemma,
Phi-3 and OLMo 2 files are written unpermuted (NeoX-style rope, like HF). The converter adds 1 to every Gemma
norm weight (llama.cpp scales by w, HF by 1 + w): ``tensors()`` subtracts it. Per-architecture metadata (Gemma's
soft-caps and windows, Phi-3's longrope factor tensors and partial rotary, MoE experts) is in gguf_families.py;
linear / yarn / llama3 rope scaling in gguf_rope.py; the tensor-name table and the q/k row permutation in
gguf_names.py. Families whose HF checkpoints have their own tensor names or whose converter reshapes tensors
(GPT-2, Phi-2, StableLM, GPT-NeoX, Falcon, OLMo, Seed-OSS, Nemotron, GLM-4, EXAONE 4, Ernie 4.5 (MoE), Cohere2,
GraniteMoe, DBRX, PhiMoE, DeepSeek-V2 / V3) have a whole table each in gguf_archs.py (configs in
gguf_arch_configs.py, DeepSeek in gguf_deepseek.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, KeysView
from typing import Any

import numpy as np

from . import gguf_archs
from .gguf_families import FAMILY_CONFIG, moe_config
from .gguf_names import expert_names, hf_tensor_name, permute_qk, unpermute_qk
from .gguf_rope import f32_to_float, rope_scaling_field

# hf_tensor_name, permute_qk and unpermute_qk (gguf_names.py) keep their import path here.
__all__ = ["SUPPORTED_GGUF_ARCHITECTURES", "SUPPORTED_TENSOR_TYPES", "GGUFCheckpoint", "dequantize", "hf_tensor_name",
           "is_gguf", "permute_qk", "unpermute_qk"]

# GGUF general.architecture -> HF architectures[0]. Only the families jaxllm's models implement.
SUPPORTED_GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM",
    "qwen2moe": "Qwen2MoeForCausalLM",
    "granite": "GraniteForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "smollm3": "SmolLM3ForCausalLM",  # llama.cpp skips rope on every 4th layer, transformers' default interval
    "starcoder2": "Starcoder2ForCausalLM",
    "command-r": "CohereForCausalLM",
    **{name: arch.hf_architecture for name, arch in gguf_archs.ARCHS.items()},  # their own name tables
}
# Architectures whose q/k rows llama.cpp's converter permutes (LlamaModel and its subclasses).
_PERMUTED_QK = ("llama", "granite", "smollm3")
# "llama" files with llama.expert_count > 0 are Mixtral (llama.cpp converts Mixtral to its llama architecture).

# Tensor types dequantized (with gguf.quants) to float32. Names are gguf.GGMLQuantizationType names.
SUPPORTED_TENSOR_TYPES = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)

# Tensors that are metadata, not parameters: consumed by hf_config, never yielded.
_CONSUMED_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")

GGUF_MAGIC = b"GGUF"


def is_gguf(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file that starts with the GGUF magic (the extension is not trusted)."""
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def dequantize(data: np.ndarray, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw GGUF tensor bytes/values -> float32 array of ``shape`` (HF order: outermost dimension first)."""
    import gguf

    if type_name not in SUPPORTED_TENSOR_TYPES:
        raise ValueError(f"GGUF tensor type {type_name} is not supported; supported types: "
                         f"{', '.join(SUPPORTED_TENSOR_TYPES)}")
    out = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])
    return np.asarray(out, dtype=np.float32).reshape(shape)


@functools.lru_cache(maxsize=4)
def _parsed_file(path: str, size: int, mtime_ns: int):
    """The parsed header of one version (size, mtime) of a GGUF file: the model source, the tokenizer and the
    loader each open the file, and parsing the default model's 49k-token vocabulary takes ~0.3 s."""
    from .gguf_reader import GGUFFile

    return GGUFFile(path)


class GGUFCheckpoint:
    """One GGUF file, read lazily (memory-mapped). See the module docstring for the three views it offers."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not is_gguf(self.path):
            raise ValueError(f"{self.path!r} is not a GGUF file (missing the 'GGUF' magic bytes)")
        st = os.stat(self.path)
        self.file = _parsed_file(os.path.abspath(self.path), st.st_size, st.st_mtime_ns)
        self.metadata: dict[str, Any] = self.file.metadata
        self.architecture = self.metadata.get("general.architecture")
        if int(self.metadata.get("split.count", 1)) > 1:  # gguf-split's shards: only single files, as in vLLM
            raise ValueError(f"{self.path!r} is shard {int(self.metadata.get('split.no', 0)) + 1} of "
                             f"{self.metadata['split.count']} of a split GGUF; only single-file GGUF models load: "
                             "merge the shards with llama.cpp's `llama-gguf-split --merge`")
        if self.architecture not in SUPPORTED_GGUF_ARCHITECTURES:
            raise ValueError(f"GGUF architecture {self.architecture!r} in {self.path!r} is not supported; "
                             f"supported GGUF architectures: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)}")
        self._tensors = self.file.tensors
        for name, t in self._tensors.items():  # fail before any loading, naming the offender
            if t.type_name not in SUPPORTED_TENSOR_TYPES:
                raise ValueError(f"GGUF tensor {name!r} has type {t.type_name}, which is not supported; "
                                 f"supported types: {', '.join(SUPPORTED_TENSOR_TYPES)}")
        self.num_experts = int(self.arch_key("expert_count") or 0)
        for name in self._tensors:
            if name not in _CONSUMED_TENSORS:
                self._hf_names(name)
        self.hf_config = self._build_hf_config()

    # ------------------------------------------------------------------ metadata
    def arch_key(self, key: str, default: Any = None) -> Any:
        """The metadata value ``{architecture}.{key}`` (``default`` when absent)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    _arch_key = arch_key

    def tensor_keys(self) -> KeysView[str]:
        """llama.cpp names of every tensor in the file (a view: O(1) membership, no copy per call)."""
        return self._tensors.keys()

    def _build_hf_config(self) -> dict[str, Any]:
        """The HF config.json dict of the equivalent model (see ``ModelConfig.from_hf``)."""
        hidden = int(self._arch_key("embedding_length"))
        heads = int(self._arch_key("attention.head_count"))
        kv_heads = int(self._arch_key("attention.head_count_kv", heads))
        head_dim = int(self._arch_key("attention.key_length", hidden // heads))
        rope_dim = self._arch_key("rope.dimension_count")
        partial_rotary = self.architecture == "phi3" or self.architecture in gguf_archs.ARCHS
        if rope_dim is not None and int(rope_dim) != head_dim and not partial_rotary:
            raise ValueError(f"GGUF rope.dimension_count={rope_dim} differs from head_dim={head_dim}: partial "
                             f"rotary embeddings are not supported for {self.architecture}")
        vocab = self._arch_key("vocab_size")
        if vocab is None:  # older files: the vocabulary's length, else the embedding's rows
            tokens = self.metadata.get("tokenizer.ggml.tokens")
            vocab = len(tokens) if tokens else self._tensors["token_embd.weight"].shape[0]
        cfg: dict[str, Any] = {
            "architectures": [SUPPORTED_GGUF_ARCHITECTURES[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": int(vocab),
            "hidden_size": hidden,
            "intermediate_size": int(self._arch_key("feed_forward_length",
                                                    self._arch_key("expert_feed_forward_length"))),
            "num_hidden_layers": int(self._arch_key("block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": f32_to_float(self._arch_key("attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": f32_to_float(self._arch_key("rope.freq_base", 10000.0)),
            "max_position_embeddings": int(self._arch_key("context_length", 2048)),
            "tie_word_embeddings": "output.weight" not in self._tensors,
            "bos_token_id": self.metadata.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self._eos_token_id(),
            "torch_dtype": "float32",
        }
        if self.architecture in gguf_archs.ARCHS:  # (LayerNorm families: no RMSNorm epsilon)
            if self._arch_key("attention.layer_norm_rms_epsilon") is None:
                del cfg["rms_norm_eps"]
            if self.architecture in ("gpt2", "phi2", "falcon"):  # (files state 4 x hidden whatever the model has)
                cfg["intermediate_size"] = int(self._tensors["blk.0.ffn_up.weight"].shape[0])
            return gguf_archs.ARCHS[self.architecture].config(self, cfg)
        if self.architecture in _PERMUTED_QK:
            cfg["attention_bias"] = "blk.0.attn_q.bias" in self._tensors
            cfg["mlp_bias"] = "blk.0.ffn_up.bias" in self._tensors
        if self.num_experts:
            cfg.update(moe_config(self, cfg))
        if self.architecture in FAMILY_CONFIG:
            cfg.update(FAMILY_CONFIG[self.architecture](self, cfg))
            return cfg
        return {**cfg, **rope_scaling_field(self, cfg)}

    def tensor_array(self, name: str) -> np.ndarray:
        """One tensor of the file dequantized to float32 (HF order), by its llama.cpp name."""
        t = self._tensors[name]
        return dequantize(t.data, t.type_name, t.shape)

    def _eos_token_id(self) -> int | list[int] | None:
        """config.json's eos_token_id: the eos id, or [eos, eot, eom] when the file names end-of-turn tokens too
        (an instruct model must stop at <|im_end|>/<|eot_id|> even when its eos is <|endoftext|>)."""
        eos = self.metadata.get("tokenizer.ggml.eos_token_id")
        ids = self.generation_eos_ids
        if eos is None or ids == (int(eos),):
            return None if eos is None else int(eos)
        return [int(eos)] + [i for i in ids if i != int(eos)]

    @property
    def generation_eos_ids(self) -> tuple[int, ...]:
        """Token ids that end generation: eos plus llama.cpp's end-of-turn / end-of-message ids when present."""
        keys = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
        return tuple(sorted({int(self.metadata[k]) for k in keys if self.metadata.get(k) is not None}))

    # ------------------------------------------------------------------ tensors
    def _hf_names(self, name: str) -> list[str]:
        """HF names of one llama.cpp tensor: one name, or one per expert for a stacked expert tensor."""
        if self.architecture in gguf_archs.ARCHS:
            return gguf_archs.hf_names(self, name)
        experts = expert_names(name, self.architecture, self.num_experts)
        if experts == []:
            raise ValueError(f"GGUF tensor {name!r} in {self.path!r} stacks MoE experts but the file has no "
                             f"{self.architecture}.expert_count")
        return experts or [hf_tensor_name(name, self.architecture)]

    def tensor_names(self) -> list[str]:
        """HF names of the tensors ``tensors()`` yields, in file order."""
        return [hf for n in self._tensors if n not in _CONSUMED_TENSORS for hf in self._hf_names(n)]

    def tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(hf_name, float32 ndarray in HF layout)`` one tensor at a time, in file order.

        Layouts: embeddings [V, D], q_proj [H*Dh, D], k/v_proj [K*Dh, D], o_proj [D, H*Dh], gate/up [F, D],
        down [D, F], norms [D] (GGUF stores dims innermost-first; reversing them gives the HF shape)."""
        heads = self.hf_config.get("num_attention_heads")  # (DBRX's config nests them)
        kv_heads = self.hf_config.get("num_key_value_heads")
        for name, t in self._tensors.items():
            if name in _CONSUMED_TENSORS:
                continue
            if self.architecture in gguf_archs.ARCHS:
                names = gguf_archs.hf_names(self, name)
                if gguf_archs.is_merged_half(self.architecture, name):  # (its partner reads it and yields both)
                    continue
                arrays = gguf_archs.arrays(self, name, dequantize(t.data, t.type_name, t.shape))
                if len(names) != len(arrays):  # (a stack of another size than its metadata count)
                    raise ValueError(f"GGUF tensor {name!r} of shape {t.shape} holds {len(arrays)} HF tensors where "
                                     f"the file's metadata says {len(names)}")
                yield from zip(names, arrays)
                continue
            w = dequantize(t.data, t.type_name, t.shape)
            if self.architecture in _PERMUTED_QK:
                suffix = name.split(".", 2)[-1] if name.startswith("blk.") else ""
                if suffix.startswith("attn_q."):
                    w = unpermute_qk(w, heads)
                elif suffix.startswith("attn_k."):
                    w = unpermute_qk(w, kv_heads)
            elif self.architecture.startswith("gemma") and name.endswith("norm.weight"):
                w = w - 1.0  # the converter's + 1 (llama.cpp scales by w, HF by 1 + w)
            experts = expert_names(name, self.architecture, self.num_experts)
            if experts:  # stacked experts [E, out, in] -> one [out, in] tensor per expert
                yield from ((hf, w[j]) for j, hf in enumerate(experts))
            else:
                yield hf_tensor_name(name, self.architecture), w

    # ------------------------------------------------------------------ tokenizer
    def tokenizer(self):
        """A ``transformers`` fast tokenizer rebuilt from the file's tokenizer metadata: byte-level BPE files
        directly (gguf_tokenizer.py), other tokenizer models (sentencepiece) through transformers' converter."""
        from .gguf_tokenizer import (
            PASS_TOKENIZER,
            SUPPORTED_TOKENIZER_MODELS,
            build_tokenizer,
            transformers_tokenizer,
        )

        model = self.metadata.get("tokenizer.ggml.model")
        if model is None:
            raise ValueError(f"GGUF file {self.path!r} carries no tokenizer (no tokenizer.ggml.model); pass "
                             f"{PASS_TOKENIZER}")
        if model in SUPPORTED_TOKENIZER_MODELS:
            return build_tokenizer(self.metadata)
        return transformers_tokenizer(self.path, model)

    def __repr__(self) -> str:
        return f"GGUFCheckpoint({self.path!r}, architecture={self.architecture!r}, tensors={len(self._tensors)})"
