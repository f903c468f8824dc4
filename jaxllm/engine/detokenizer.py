"""Incremental detokenization, stop strings and logprob token strings (host side, no jax).

The tokenizer is duck-typed (a HuggingFace tokenizer): ``convert_ids_to_tokens`` (of one int),
``convert_tokens_to_string``, ``decode``, ``__len__``, ``all_special_ids`` and optionally ``is_fast``,
``all_special_tokens``, ``get_added_vocab``, ``backend_tokenizer``.

Why incremental: decoding the whole output every step is O(length^2). Each new token is decoded together
with a few tokens before it (a window ``tokens[prefix_offset:]``): the text it adds is
``to_string(tokens[prefix_offset:]) - to_string(tokens[prefix_offset:read_offset])``. Decoding in context
keeps SentencePiece's leading spaces right, and a window whose text ends with U+FFFD is an unfinished
multi-byte character of a byte-level BPE: nothing is emitted until a later token completes it.
This is the algorithm vLLM uses (its "slow" incremental detokenizer), so texts match vLLM's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..outputs import Logprob
from .batch import TokenLogprobs

_CONTEXT_TOKENS = 5  # prompt tokens decoded as left context of the first generated token
_TRIM_AT = 64  # drop converted tokens that can no longer be in a window once this many pile up


class TokenizerView:
    """Facts about a tokenizer computed once per engine (len, special/added tokens, fast or not) and a
    cache of single-token strings for ``Logprob.decoded_token``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_len = len(tokenizer)
        self.is_fast = bool(getattr(tokenizer, "is_fast", False))
        self.special_tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
        get_added = getattr(tokenizer, "get_added_vocab", None)
        self.added_tokens = set(get_added()) if callable(get_added) else set()
        # Slow tokenizers with added tokens decode those tokens separately (as HF and vLLM do); only then
        # does spaces_between_special_tokens change the text.
        self.segmented = not self.is_fast and bool(self.added_tokens)
        self.special_ids = set(getattr(tokenizer, "all_special_ids", None) or ())
        # HF fast tokenizers convert tokens to text with their backend's decoder; calling it directly
        # skips a Python layer (this runs twice per generated token).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if self.is_fast and callable(getattr(backend, "get_added_tokens_decoder", None)):
            # The backend skips every added token marked special (HF's fast decode and vLLM's DecodeStream),
            # also those the tokenizer's special-token attributes do not list (e.g. chat-turn markers).
            self.special_ids |= {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
        decoder = getattr(backend, "decoder", None) if self.is_fast else None
        self._to_string = decoder.decode if decoder is not None else tokenizer.convert_tokens_to_string
        self._token_of: dict[int, str | None] = {}  # id -> token string (None: no text)
        self._single: dict[int, str] = {}

    def token_of(self, token_id: int) -> str | None:
        """The token string of one id (cached); None for ids outside the tokenizer (a padded vocab)."""
        try:
            return self._token_of[token_id]
        except KeyError:
            tok = self.tokenizer.convert_ids_to_tokens(token_id) if 0 <= token_id < self.vocab_len else None
            self._token_of[token_id] = tok
            return tok

    def ids_to_tokens(self, ids: list[int], skip_special_tokens: bool) -> list[str]:
        out = []
        for i in ids:
            if skip_special_tokens and i in self.special_ids:
                continue
            tok = self.token_of(i)
            if tok is not None:
                out.append(tok)
        return out

    def tokens_to_string(self, tokens: list[str], skip_special_tokens: bool, spaces_between: bool) -> str:
        if not tokens:
            return ""
        if not self.segmented:
            return self._to_string(tokens)
        parts: list[str] = []
        run: list[str] = []
        for tok in tokens:
            if skip_special_tokens and tok in self.special_tokens:
                continue
            if tok in self.added_tokens:
                if run:
                    parts.append(self.tokenizer.convert_tokens_to_string(run))
                    run = []
                parts.append(tok)
            else:
                run.append(tok)
        if run:
            parts.append(self.tokenizer.convert_tokens_to_string(run))
        return (" " if spaces_between else "").join(parts)

    def decode_token(self, token_id: int) -> str:
        """The text of one token alone (vLLM's ``decoded_token``), cached."""
        s = self._single.get(token_id)
        if s is None:
            s = self.tokenizer.decode([token_id]) if 0 <= token_id < self.vocab_len else ""
            self._single[token_id] = s
        return s


class IncrementalDetokenizer:
    """Output text of one sequence, grown one token at a time, with stop-string detection.

    ``update`` returns the stop string that ended the text, or None. After a match ``output_text`` is cut
    before the stop string (or right after it with ``include_stop_str_in_output``)."""

    __slots__ = (
        "include_stop",
        "min_tokens",
        "num_chars",
        "pieces",
        "prefix_offset",
        "read_offset",
        "skip_special_tokens",
        "spaces_between",
        "stop",
        "stop_tail",
        "tail_len",
        "tokens",
        "view",
    )

    def __init__(self, view: TokenizerView, prompt_token_ids: list[int], params: Any) -> None:
        self.view = view
        self.skip_special_tokens = params.skip_special_tokens
        self.spaces_between = params.spaces_between_special_tokens
        self.stop: list[str] = params.stop
        self.include_stop = params.include_stop_str_in_output
        self.min_tokens = params.min_tokens
        # Left context: the last few prompt tokens (two extra in case special ones are skipped).
        self.tokens = view.ids_to_tokens(prompt_token_ids[-(_CONTEXT_TOKENS + 2) :], self.skip_special_tokens)
        self.read_offset = len(self.tokens)
        self.prefix_offset = max(self.read_offset - _CONTEXT_TOKENS, 0)
        # The text is kept as pieces (joined on demand): appending to one growing str copies it every token.
        self.pieces: list[str] = []
        self.num_chars = 0
        # The last chars of the text that a stop string completed by the next piece could start in.
        self.stop_tail = ""
        self.tail_len = max((len(x) for x in self.stop), default=1) - 1

    @property
    def output_text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def decode_next(self, token_id: int) -> str:
        """Text added by ``token_id`` ("" while a multi-byte character is unfinished)."""
        view = self.view
        if self.skip_special_tokens and token_id in view.special_ids:
            return ""
        tok = view.token_of(token_id)
        if tok is None:
            return ""
        toks = self.tokens
        toks.append(tok)
        to_str = view.tokens_to_string
        prefix_text = to_str(
            toks[self.prefix_offset : self.read_offset], self.skip_special_tokens, self.spaces_between
        )
        full_text = to_str(toks[self.prefix_offset :], self.skip_special_tokens, self.spaces_between)
        if len(full_text) <= len(prefix_text) or full_text.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(toks)
        if self.prefix_offset >= _TRIM_AT:
            del toks[: self.prefix_offset]
            self.read_offset -= self.prefix_offset
            self.prefix_offset = 0
        return full_text[len(prefix_text) :]

    def update(self, token_id: int, num_output_tokens: int, stop_terminated: bool) -> str | None:
        """Append ``token_id`` (the ``num_output_tokens``-th generated token) to the text and check the stop
        strings. A token that stopped the sequence (EOS / stop id: ``stop_terminated``) is left out of the
        text unless ``include_stop_str_in_output`` (vLLM). Stop strings are looked for only once more than
        ``min_tokens`` tokens were generated, and only where they overlap the new characters."""
        if stop_terminated and not self.include_stop:
            return None
        piece = self.decode_next(token_id)
        if not piece:
            return None
        self.pieces.append(piece)
        self.num_chars += len(piece)
        if not self.stop:
            return None
        window = self.stop_tail + piece
        self.stop_tail = window[max(0, len(window) - self.tail_len) :] if self.tail_len else ""
        if num_output_tokens <= self.min_tokens:
            return None
        for stop in self.stop:  # the first listed stop string that matches wins (vLLM)
            idx = window.find(stop, max(0, len(window) - len(piece) - len(stop) + 1))
            if idx < 0:
                continue
            cut = self.num_chars - len(window) + idx + (len(stop) if self.include_stop else 0)
            text = self.output_text[:cut]
            self.pieces, self.num_chars = [text], len(text)
            return stop
        return None


def make_logprobs(tl: TokenLogprobs, decode: Callable[[int], str] | None) -> dict[int, Logprob]:
    """vLLM's per-position logprobs dict: the chosen token first (with its true rank), then the top-k in
    rank order (a top-k token equal to the chosen one is not repeated)."""
    out = {
        int(tl.token_id): Logprob(
            float(tl.logprob), int(tl.rank), decode(int(tl.token_id)) if decode else None
        )
    }
    for rank, (tid, lp) in enumerate(tl.top, 1):
        tid = int(tid)
        if tid not in out:
            out[tid] = Logprob(float(lp), rank, decode(tid) if decode else None)
    return out
