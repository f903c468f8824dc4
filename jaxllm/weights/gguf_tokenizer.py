"""Rebuild a HuggingFace fast tokenizer from a GGUF file's tokenizer metadata.

A GGUF carries no ``tokenizer.json``: it stores the vocabulary (``tokenizer.ggml.tokens``, already spelled in
GPT-2's byte-to-unicode alphabet for byte-level BPE), the merges, a token type per token (3 = control,
4 = user-defined), the special token ids, the chat template, and the *name* of the pre-tokenizer
(``tokenizer.ggml.pre``) that llama.cpp maps to a split regex. We assemble the same pieces with the
``tokenizers`` library. The pre-tokenizer matters: SmolLM2's ``smollm`` isolates every digit before the GPT-2
split, so "2024" is four tokens; using the default GPT-2 split would tokenize numbers differently from the
model's training data.
"""

from __future__ import annotations

import os
from typing import Any

_GPT2_PATTERN = None  # ByteLevel(use_regex=True) applies GPT-2's split itself.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> (kind, split regex or None, ignore_merges, NFC normalizer)
SUPPORTED_PRE_TOKENIZERS: dict[str, tuple[str, str | None, bool, bool]] = {
    "default": ("gpt2", _GPT2_PATTERN, False, False),
    "gpt2": ("gpt2", _GPT2_PATTERN, False, False),
    "gpt-2": ("gpt2", _GPT2_PATTERN, False, False),
    "smollm": ("digits+gpt2", _GPT2_PATTERN, False, False),
    "llama3": ("split", _LLAMA3_PATTERN, True, False),
    "llama-v3": ("split", _LLAMA3_PATTERN, True, False),
    "llama-bpe": ("split", _LLAMA3_PATTERN, True, False),
    "qwen2": ("split", _QWEN2_PATTERN, False, True),
    "deepseek-r1-qwen": ("split", _QWEN2_PATTERN, False, True),
}
SUPPORTED_TOKENIZER_MODELS = ("gpt2",)  # byte-level BPE built here; other models through transformers_tokenizer

_CONTROL, _USER_DEFINED = 3, 4
# what every error about a GGUF's own tokenizer suggests (vLLM's advice: the base model's tokenizer)
PASS_TOKENIZER = "tokenizer=<HF folder or hub id of the model>, or skip_tokenizer_init=True to work with token ids"


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, normalizers, pre_tokenizers

    if pre not in SUPPORTED_PRE_TOKENIZERS:
        raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} is not supported; supported pre-tokenizers: "
                         f"{', '.join(SUPPORTED_PRE_TOKENIZERS)}; pass {PASS_TOKENIZER}")
    kind, pattern, ignore_merges, nfc = SUPPORTED_PRE_TOKENIZERS[pre]
    byte_level_split = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if kind == "gpt2":
        pt = byte_level_split
    elif kind == "digits+gpt2":
        pt = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level_split])
    else:
        pt = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    return pt, ignore_merges, (normalizers.NFC() if nfc else None)


def build_tokenizer(metadata: dict[str, Any]):
    """``transformers.PreTrainedTokenizerFast`` from a GGUF file's metadata dict (``tokenizer.*`` keys)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    model = metadata.get("tokenizer.ggml.model")
    if model not in SUPPORTED_TOKENIZER_MODELS:
        raise ValueError(f"GGUF tokenizer.ggml.model={model!r} is not supported; supported tokenizer models: "
                         f"{', '.join(SUPPORTED_TOKENIZER_MODELS)} (byte-level BPE)")
    tokens: list[str] = metadata.get("tokenizer.ggml.tokens")
    merges: list[str] | None = metadata.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise ValueError("GGUF file has no tokenizer.ggml.tokens/merges; cannot build a byte-level BPE tokenizer; "
                         f"pass {PASS_TOKENIZER}")
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    pre_tok, ignore_merges, normalizer = _pre_tokenizer(metadata.get("tokenizer.ggml.pre", "default"))

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False,
                               ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, <|endoftext|>, ...) must match whole and be skippable when decoding;
    # user-defined ones (e.g. <think>) match whole but are ordinary text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == _CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == _USER_DEFINED])
    tok.post_processor = _post_processor(metadata, tokens, vocab)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   **_tokenizer_kwargs(metadata, tokens))


def _token_of(metadata: dict[str, Any], tokens: list[str], key: str) -> str | None:
    """The token a ``tokenizer.ggml.<key>`` id names (None: absent or out of the vocabulary)."""
    idx = metadata.get(f"tokenizer.ggml.{key}")
    return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None


def _post_processor(metadata: dict[str, Any], tokens: list[str], vocab: dict[str, int]):
    """BOS / EOS added around every encoding as the file's ``add_bos_token`` / ``add_eos_token`` say, else
    byte-level offsets only."""
    from tokenizers import processors

    bos = _token_of(metadata, tokens, "bos_token_id")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    eos = _token_of(metadata, tokens, "eos_token_id")
    if not (add_bos or (add_eos and eos is not None)):
        return processors.ByteLevel(trim_offsets=False)
    single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos and eos else [])
    pair = single + ["$B:1"] + ([f"{eos}:1"] if add_eos and eos else [])
    specials = [(t, vocab[t]) for t in {bos if add_bos else None, eos if add_eos else None} if t]
    return processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair), special_tokens=specials)


def _tokenizer_kwargs(metadata: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """PreTrainedTokenizerFast's keywords from the metadata: special tokens, chat template, context length."""
    kwargs: dict[str, Any] = {}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        value = _token_of(metadata, tokens, key)
        if value is not None:
            kwargs[name] = value
    template = metadata.get("tokenizer.chat_template")
    if template:
        kwargs["chat_template"] = template
    arch = metadata.get("general.architecture")
    ctx = metadata.get(f"{arch}.context_length")
    if ctx:
        kwargs["model_max_length"] = int(ctx)
    return kwargs


def transformers_tokenizer(path: str, model: str):
    """The tokenizer of a GGUF whose ``tokenizer.ggml.model`` is not byte-level BPE (sentencepiece "llama", ...),
    converted by transformers (``AutoTokenizer.from_pretrained(folder, gguf_file=name)``), as vLLM loads every
    GGUF tokenizer. Slower than ``build_tokenizer`` (transformers parses the whole file), hence only the fallback."""
    from transformers import AutoTokenizer

    path = os.path.abspath(path)
    try:
        return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as e:
        raise ValueError(f"GGUF tokenizer.ggml.model={model!r} of {path!r}: transformers could not build the "
                         f"tokenizer ({type(e).__name__}: {e}); pass {PASS_TOKENIZER}") from e
