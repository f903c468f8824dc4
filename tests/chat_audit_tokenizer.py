"""A tiny Llama-style tokenizer built in-process (no downloads): SentencePiece-like BPE ("▁" for spaces) with
byte fallback (characters it never saw become <0xNN> byte tokens, so one character can span several tokens),
a post-processor that prepends BOS (as Llama's), and a chat template that writes ``bos_token`` itself."""

from __future__ import annotations

import functools

CORPUS = ["Hello world, the quick brown fox jumps over the lazy dog.", "What is the weather like today?",
          "A user asks and the assistant answers. Think step by step."]
SPECIALS = ["<unk>", "<s>", "</s>"]
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}")


@functools.cache
def llama_tokenizer():
    """A HF fast tokenizer: ids 0-2 are <unk> <s> </s>, then 256 byte tokens, then ~120 trained merges."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trained.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(vocab_size=130, special_tokens=SPECIALS))
    state = trained.get_vocab(with_added_tokens=False)
    learned = sorted((t for t in state if t not in SPECIALS), key=state.__getitem__)
    vocab = {t: i for i, t in enumerate([*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *learned])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in _merges(trained)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = trained.normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(SPECIALS)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    hf.chat_template = LLAMA_TEMPLATE
    return hf


def _merges(tokenizer) -> list:
    import json

    return json.loads(tokenizer.to_str())["model"]["merges"]


def save_llama_tokenizer(path) -> None:
    llama_tokenizer().save_pretrained(str(path))
