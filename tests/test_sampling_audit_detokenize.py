"""Output text against vLLM's fast detokenizer (a tokenizers DecodeStream primed with the prompt) for a
SentencePiece-style tokenizer whose added special tokens are not all listed among the tokenizer's special-token
attributes (as chat-turn markers often are): ``skip_special_tokens`` drops every token the backend marks
special, as HF's fast decode and vLLM do."""

from __future__ import annotations

import pytest
from vllm_detokenize import vllm_fast_text

from jaxllm import SamplingParams
from jaxllm.engine.detokenizer import IncrementalDetokenizer, TokenizerView

WORDS = ["▁Hello", "▁world", "▁a", "b", "c", "▁the", "re", "▁wo"]


@pytest.fixture(scope="module")
def tok():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "</s>", "<|turn|>")])
    backend.add_tokens([AddedToken("<tool>", special=False)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("spaces", [True, False])
def test_text_matches_vllms_fast_detokenizer(tok, skip, spaces):
    turn, tool, eos = (tok.convert_tokens_to_ids(t) for t in ("<|turn|>", "<tool>", "</s>"))
    assert turn not in tok.all_special_ids  # special in the backend only
    ids = lambda *ws: [tok.convert_tokens_to_ids(w) for w in ws]
    prompt = ids("<s>", "▁the")
    out = ids("▁Hello") + [eos, turn] + ids("▁world") + [tool, turn] + ids("▁a", "b", "re") + [tool, tool]
    params = SamplingParams(skip_special_tokens=skip, spaces_between_special_tokens=spaces)
    det = IncrementalDetokenizer(TokenizerView(tok), prompt, params)
    for n, t in enumerate(out, 1):
        det.update(t, n, False)
    assert det.output_text == vllm_fast_text(tok, prompt, out, skip, spaces)
    assert ("<|turn|>" in det.output_text) == (not skip) and "<tool>" in det.output_text
    assert det.output_text.strip() == tok.decode(out, skip_special_tokens=skip).strip()
