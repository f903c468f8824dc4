"""vLLM's fast incremental detokenizer as a test reference: what vLLM's FastIncrementalDetokenizer emits for a
HF fast tokenizer (a tokenizers DecodeStream primed with the prompt; between consecutive added tokens their raw
text when ``spaces_between_special_tokens`` is off and special tokens are kept)."""

from __future__ import annotations


def vllm_fast_text(tok, prompt: list[int], out: list[int], skip: bool, spaces: bool) -> str:
    """The text vLLM gives the output ids ``out`` after ``prompt`` (``skip``: skip_special_tokens,
    ``spaces``: spaces_between_special_tokens)."""
    from tokenizers.decoders import DecodeStream

    backend = tok.backend_tokenizer
    stream = DecodeStream(skip_special_tokens=skip)
    for t in prompt:
        stream.step(backend, t)
    added = {t: a.content for t, a in backend.get_added_tokens_decoder().items()}
    text, last_added = "", False
    for t in out:
        piece = stream.step(backend, t) or ""
        if not (skip or spaces):
            if t in added and last_added:
                piece = added[t]
            last_added = t in added
        text += piece
    return text
