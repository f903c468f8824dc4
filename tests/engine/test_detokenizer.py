"""Incremental detokenization on a real byte-level BPE tokenizer, stop strings, logprob dicts."""

from __future__ import annotations

import random
from typing import ClassVar

import pytest
from bpe_tokenizer import CORPUS, bpe_tokenizer

from jaxllm.engine.batch import TokenLogprobs
from jaxllm.engine.detokenizer import IncrementalDetokenizer, TokenizerView, make_logprobs
from jaxllm.sampling_params import SamplingParams

TEXTS = CORPUS + ["a😀b", "😀", "é", "你好", " 👨‍👩‍👧 x", "\n\nThe end 🇫🇷"]


def stream(tok, prompt_ids, out_ids, **kw):
    det = IncrementalDetokenizer(TokenizerView(tok), prompt_ids, SamplingParams(**kw))
    pieces = []
    for i, t in enumerate(out_ids, 1):
        before = det.output_text
        det.update(t, i, False)
        pieces.append(det.output_text[len(before) :])
    return det, pieces


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("prompt", ["", "Prompt: ", "你"])
def test_incremental_matches_full_decode_and_never_emits_replacement_char(text, prompt):
    tok = bpe_tokenizer()
    prompt_ids = tok.encode(prompt, add_special_tokens=False) or [tok.convert_tokens_to_ids("Ġ")]
    out_ids = tok.encode(text, add_special_tokens=False)
    det, pieces = stream(tok, prompt_ids, out_ids)
    assert det.output_text == tok.decode(out_ids)
    assert all("\ufffd" not in p for p in pieces)
    # multi-byte characters really were split over several tokens somewhere
    if text == "😀":
        assert len(out_ids) > 1 and pieces[:-1] == [""] * (len(out_ids) - 1)


def test_long_stream_trims_window_and_stays_exact():
    tok = bpe_tokenizer()
    text = " ".join(TEXTS) * 8
    out_ids = tok.encode(text, add_special_tokens=False)
    det, _ = stream(tok, [5], out_ids)
    assert det.output_text == tok.decode(out_ids)
    assert len(det.tokens) < 80  # the window was trimmed


@pytest.mark.parametrize("skip", [True, False])
def test_special_and_added_tokens(skip):
    tok = bpe_tokenizer()
    eos = tok.eos_token_id
    extra = tok.convert_tokens_to_ids("<extra>")
    out_ids = (
        tok.encode("Hello", add_special_tokens=False)
        + [eos, extra]
        + tok.encode(" wörld", add_special_tokens=False)
    )
    det, _ = stream(tok, [5], out_ids, skip_special_tokens=skip)
    assert det.output_text == tok.decode(out_ids, skip_special_tokens=skip)
    assert ("<eos>" in det.output_text) == (not skip)
    assert "<extra>" in det.output_text


class CharSlowTokenizer:
    """A duck-typed non-fast tokenizer: one token per character, plus added tokens."""

    is_fast = False
    all_special_tokens: ClassVar[list[str]] = ["<s>"]
    all_special_ids: ClassVar[list[int]] = [0]

    def __init__(self):
        self.vocab = ["<s>", "<a>"] + [chr(c) for c in range(32, 127)]

    def __len__(self):
        return len(self.vocab)

    def get_added_vocab(self):
        return {"<s>": 0, "<a>": 1}

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        if isinstance(ids, int):
            return self.vocab[ids]
        return [
            self.vocab[i]
            for i in ids
            if not (skip_special_tokens and self.vocab[i] in self.all_special_tokens)
        ]

    def convert_tokens_to_string(self, tokens):
        return "".join(tokens)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)

    def ids(self, s):
        return [self.vocab.index(c) for c in s]


@pytest.mark.parametrize("spaces", [True, False])
def test_slow_tokenizer_spaces_between_special_tokens(spaces):
    tok = CharSlowTokenizer()
    out = tok.ids("ab") + [1] + tok.ids("cd") + [0] + tok.ids("e")
    det, _ = stream(tok, tok.ids("x"), out, skip_special_tokens=False, spaces_between_special_tokens=spaces)
    # HF slow-tokenizer semantics: added tokens decoded apart, parts joined by " " when asked
    assert det.output_text == ("ab <a> cd <s> e" if spaces else "ab<a>cd<s>e")
    det, _ = stream(tok, tok.ids("x"), out, skip_special_tokens=True, spaces_between_special_tokens=spaces)
    assert det.output_text == ("ab <a> cde" if spaces else "ab<a>cde")  # skipped tokens vanish first


def test_out_of_tokenizer_ids_decode_to_nothing():
    tok = bpe_tokenizer()
    det, _ = stream(tok, [5], [len(tok) + 3, *tok.encode("ok", add_special_tokens=False)])
    assert det.output_text == "ok"


def stop_run(tok, text, n_before_min=0, **kw):
    out_ids = tok.encode(text, add_special_tokens=False)
    det = IncrementalDetokenizer(TokenizerView(tok), [5], SamplingParams(**kw))
    for i, t in enumerate(out_ids, 1):
        s = det.update(t, i, False)
        if s is not None:
            return det.output_text, s, i, len(out_ids)
    return det.output_text, None, len(out_ids), len(out_ids)


def test_stop_strings():
    tok = bpe_tokenizer()
    text, s, _, _ = stop_run(tok, "Hello world STOP here more", stop=["STOP"])
    assert (text, s) == ("Hello world ", "STOP")
    text, s, _, _ = stop_run(
        tok, "Hello world STOP here more", stop=["STOP"], include_stop_str_in_output=True
    )
    assert (text, s) == ("Hello world STOP", "STOP")
    # a stop string across several tokens and inside a token; first listed match wins
    text, s, _, _ = stop_run(tok, "The quick brown fox", stop=["zzz", "ck br"])
    assert (text, s) == ("The qui", "ck br")
    # multi-byte stop string
    text, s, _, _ = stop_run(tok, "a 你好世界 b", stop=["好世"])
    assert (text, s) == ("a 你", "好世")
    text, s, _, _ = stop_run(tok, "emoji 😀😃 x", stop=["😃"], include_stop_str_in_output=True)
    assert (text, s) == ("emoji 😀😃", "😃")
    text, s, _, _ = stop_run(tok, "no match at all", stop=["STOP"])
    assert (text, s) == ("no match at all", None)


def test_stop_strings_wait_for_min_tokens():
    tok = bpe_tokenizer()
    text = "STOP and STOP again"
    n_first = len(tok.encode("STOP", add_special_tokens=False))
    out, s, at, _ = stop_run(tok, text, stop=["STOP"], min_tokens=n_first, max_tokens=50)
    assert s == "STOP" and out == "STOP and "
    assert at > n_first


def test_stop_terminated_token_left_out_of_text():
    tok = bpe_tokenizer()
    det = IncrementalDetokenizer(TokenizerView(tok), [5], SamplingParams(skip_special_tokens=False))
    for i, t in enumerate(tok.encode("Hi", add_special_tokens=False), 1):
        det.update(t, i, False)
    det.update(tok.eos_token_id, 9, True)
    assert det.output_text == "Hi"
    det = IncrementalDetokenizer(
        TokenizerView(tok), [5], SamplingParams(skip_special_tokens=False, include_stop_str_in_output=True)
    )
    det.update(tok.eos_token_id, 1, True)
    assert det.output_text == "<eos>"


def test_make_logprobs_order_and_ranks():
    tok = bpe_tokenizer()
    view = TokenizerView(tok)
    d = make_logprobs(TokenLogprobs(7, -2.5, 4, [(3, -0.1), (7, -2.5), (9, -3.0)]), view.decode_token)
    assert list(d) == [7, 3, 9]
    assert (d[7].rank, d[3].rank, d[9].rank) == (4, 1, 3)
    assert d[3].decoded_token == tok.decode([3])
    d = make_logprobs(TokenLogprobs(7, -2.5, 1, []), None)
    assert list(d) == [7] and d[7].decoded_token is None


def test_random_valid_utf8_streams():
    tok = bpe_tokenizer()
    rng = random.Random(0)
    chars = list("abc é你好😀👨‍👩‍👧🇫🇷Привет")
    for _ in range(30):
        s = "".join(rng.choice(chars) for _ in range(rng.randint(1, 30)))
        out_ids = tok.encode(s, add_special_tokens=False)
        det, pieces = stream(tok, [5], out_ids)
        assert det.output_text == s
        assert all("\ufffd" not in p for p in pieces)


def naive_stop(tok, out_ids, stop, include):
    """Reference: decode the whole prefix each token, look for stop strings overlapping the new chars."""
    prev = ""
    for i in range(1, len(out_ids) + 1):
        text = tok.decode(out_ids[:i])
        if text.endswith("\ufffd") or len(text) <= len(prev):
            continue
        new = len(text) - len(prev)
        for s in stop:
            idx = text.find(s, max(0, len(text) - new - len(s) + 1))
            if idx >= 0:
                return (text[: idx + len(s)] if include else text[:idx]), s
        prev = text
    return prev, None


@pytest.mark.parametrize("include", [False, True])
def test_stop_strings_match_naive_reference(include):
    tok = bpe_tokenizer()
    rng = random.Random(1)
    text = " ".join(TEXTS)
    for _ in range(60):
        a = rng.randrange(len(text) - 12)
        s = text[a : a + rng.randint(1, 12)]
        other = text[rng.randrange(len(text) - 3) :][:3]
        stop = [s, other] if rng.random() < 0.5 else [s]
        if any(not x for x in stop):
            continue
        start = rng.randrange(a + 1)
        out_ids = tok.encode(text[start:], add_special_tokens=False)
        det = IncrementalDetokenizer(
            TokenizerView(tok), [5], SamplingParams(stop=stop, include_stop_str_in_output=include)
        )
        found = None
        for i, t in enumerate(out_ids, 1):
            found = det.update(t, i, False)
            if found is not None:
                break
        assert (det.output_text, found) == naive_stop(tok, out_ids, stop, include), (stop, text[start:][:40])
