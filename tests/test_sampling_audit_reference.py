"""SamplingParams' logits rules against transformers' LogitsProcessors on a tiny random Llama (greedy, so each
step is the argmax of the processed logits): repetition_penalty, logit_bias, min_tokens, allowed_token_ids,
bad_words (vLLM's rule: only the last token of a word is banned, once the OUTPUT ends with the others), and
truncate_prompt_tokens."""

from __future__ import annotations

import pytest
import torch
import transformers
from hf_models import save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, SamplingParams

EOS = 0
STEPS = 6
G = {"use_tqdm": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampling_reference")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=EOS, bos_token_id=None)
    save_tokenizer_with_template(path)
    llm = LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, max_model_len=64, enforce_eager=True)
    return llm, model


def hf_greedy(model, prompt: list[int], processors=(), steps: int = STEPS) -> list[int]:
    """Greedy decoding through transformers with ``processors`` (LogitsProcessors called on the whole ids)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            scores = model(ids).logits[:, -1].float()
            for p in processors:
                scores = p(ids, scores)
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


def run(llm, prompt: str, **kw):
    out = llm.generate(prompt, SamplingParams(temperature=0.0, max_tokens=STEPS, **kw), **G)[0]
    return out.prompt_token_ids, out.outputs[0]


@pytest.mark.parametrize("penalty", [1.7, 0.6])
def test_repetition_penalty_is_transformers(setup, penalty):
    llm, model = setup
    for prompt in ("a b a b", "x y z"):
        ids, c = run(llm, prompt, repetition_penalty=penalty, ignore_eos=True)
        proc = transformers.RepetitionPenaltyLogitsProcessor(penalty)
        assert c.token_ids == hf_greedy(model, ids, [proc]), prompt
    ids, plain = run(llm, "a b a b", ignore_eos=True)
    assert plain.token_ids != run(llm, "a b a b", repetition_penalty=1.7, ignore_eos=True)[1].token_ids


def test_logit_bias_is_transformers_sequence_bias(setup):
    llm, model = setup
    ids, plain = run(llm, "a b", ignore_eos=True)
    bias = {plain.token_ids[0]: -3.0, 40: 2.5, 41: 1.5}
    ids, c = run(llm, "a b", logit_bias=bias, ignore_eos=True)
    proc = transformers.SequenceBiasLogitsProcessor({(t,): b for t, b in bias.items()})
    assert c.token_ids == hf_greedy(model, ids, [proc]) and c.token_ids != plain.token_ids


def test_min_tokens_is_transformers_min_new_tokens(setup):
    llm, model = setup
    ids, c = run(llm, "a b", min_tokens=4, logit_bias={EOS: 8.0, 9: 7.9})
    ref = hf_greedy(model, ids, [transformers.MinNewTokensLengthLogitsProcessor(len(ids), 4, [EOS]),
                                 transformers.SequenceBiasLogitsProcessor({(EOS,): 8.0, (9,): 7.9})], steps=5)
    assert EOS in ref and c.token_ids == ref[:ref.index(EOS) + 1] and c.finish_reason == "stop"
    assert len(c.token_ids) >= 5  # EOS only after min_tokens tokens


def test_allowed_token_ids_is_argmax_over_them(setup):
    llm, model = setup
    allowed = [30, 31, 32, 200, 201]
    ids, c = run(llm, "a b", allowed_token_ids=allowed, ignore_eos=True)
    mask = transformers.SuppressTokensLogitsProcessor([t for t in range(448) if t not in allowed])
    assert c.token_ids == hf_greedy(model, ids, [mask]) and set(c.token_ids) <= set(allowed)


def _two_token_word(tok, first: int, second: int) -> str | None:
    """Text that the tokenizer encodes (alone) as exactly [first, second], or None."""
    text = tok.decode([first, second])
    return text if tok.encode(text, add_special_tokens=False) == [first, second] else None


def test_multi_token_bad_words_ban_the_last_token_after_the_output_prefix(setup):
    llm, model = setup
    tok = llm.get_tokenizer()
    ids, plain = run(llm, "a b", ignore_eos=True)
    g = plain.token_ids
    pair = next(((g[i], g[i + 1]) for i in range(len(g) - 1) if _two_token_word(tok, g[i], g[i + 1])), None)
    assert pair is not None, f"no two generated tokens re-encode alone: {g}"
    word = _two_token_word(tok, *pair)
    ids, c = run(llm, "a b", bad_words=[word], ignore_eos=True)
    banned = [list(w) for w in _bad_word_ids(tok, word)]
    assert c.token_ids == hf_greedy(model, ids, [transformers.NoBadWordsLogitsProcessor(banned)])
    assert all(c.token_ids[i:i + 2] != list(pair) for i in range(len(c.token_ids) - 1))
    # a word whose first token ends the PROMPT bans nothing at the first step: vLLM matches the output only
    word = _two_token_word(tok, ids[-1], g[0])
    assert word is not None, "the prompt's last token and the first generated one do not re-encode alone"
    assert run(llm, "a b", bad_words=[word], ignore_eos=True)[1].token_ids[0] == g[0]


def _bad_word_ids(tok, word: str) -> list[list[int]]:
    params = SamplingParams(bad_words=[word])
    params.update_from_tokenizer(tok)
    return params.bad_words_token_ids


def test_truncate_prompt_tokens_runs_the_last_tokens(setup):
    llm, model = setup
    ids = llm.get_tokenizer()("a b c d e f g").input_ids
    for k, kept in ((4, ids[-4:]), (-1, ids), (len(ids) + 3, ids)):
        out = llm.generate("a b c d e f g", SamplingParams(temperature=0.0, max_tokens=STEPS, ignore_eos=True,
                                                           truncate_prompt_tokens=k), **G)[0]
        assert out.prompt_token_ids == kept and out.outputs[0].token_ids == hf_greedy(model, kept), k
    with pytest.raises(ValueError, match="truncate_prompt_tokens"):
        SamplingParams(truncate_prompt_tokens=0)
    with pytest.raises(ValueError, match=r"truncate_prompt_tokens value \(65\) is greater than max_model_len \(64\)"):
        llm.generate("a b", SamplingParams(max_tokens=1, truncate_prompt_tokens=65), **G)
