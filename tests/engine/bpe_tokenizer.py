"""A tiny byte-level BPE tokenizer trained in-process (no downloads), wrapped as a HF fast tokenizer."""

from __future__ import annotations

import functools

CORPUS = [
    "Hello world, héllo wörld! The quick brown fox jumps over the lazy dog.",
    "你好世界，今天天气很好。 日本語のテキスト。 Ελληνικά κείμενα. Привет мир!",
    "emoji 😀😃🎉 family 👨‍👩‍👧 flags 🇫🇷 done. STOP here; stop there. The end.",
]


@functools.cache
def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    hf.add_tokens(["<extra>"])  # an added, non-special token
    return hf
