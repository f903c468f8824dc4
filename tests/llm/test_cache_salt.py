"""vLLM's ``cache_salt`` in a prompt dict: requests with different salts never share prefix-cache blocks, equal
salts do, no salt (or an empty one) shares as before. Hits are read from ``RequestOutput.num_cached_tokens``."""

from __future__ import annotations

import pytest

from jaxllm import LLM, BeamSearchParams, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=2)
PROMPT = list(range(3, 43))  # 40 tokens: two full blocks of 16 can be reused


@pytest.fixture(scope="module")
def llm(llama_dir):
    return LLM(str(llama_dir[0]), max_num_seqs=2, max_num_batched_tokens=32, enforce_eager=True)


def _run(llm, prompts):
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    return [o.num_cached_tokens for o in outs], [o.outputs[0].token_ids for o in outs]


def _salted(salt, ids=PROMPT):
    return {"prompt_token_ids": ids, "cache_salt": salt}


def test_salts_isolate_the_prefix_cache(llm):
    llm.reset_prefix_cache()
    cached, tokens = _run(llm, [_salted("alice"), _salted("bob")])  # one batch, two tenants: nothing shared
    assert cached == [0, 0] and tokens[0] == tokens[1]
    assert _run(llm, [_salted("bob")])[0] == [32]
    assert _run(llm, [_salted("carol")])[0] == [0]
    cached, plain = _run(llm, [{"prompt_token_ids": PROMPT}])  # unsalted requests never see salted blocks
    assert cached == [0] and plain == tokens[:1]
    assert _run(llm, [PROMPT])[0] == [32]
    assert _run(llm, [_salted("")])[0] == [32]  # an empty salt is no salt (vLLM)
    assert _run(llm, [_salted("alice", PROMPT + [50, 51])])[0] == [32]  # a longer prompt of the same tenant


def test_text_prompts_and_n_children_carry_the_salt(llm):
    llm.reset_prefix_cache()
    text = {"prompt": "hello world " * 12, "cache_salt": "tenant"}
    first = llm.generate(text, SamplingParams(max_tokens=1, n=2, seed=0), use_tqdm=False)[0]
    assert first.num_cached_tokens == 0 and len(first.outputs) == 2
    again = llm.generate(text, GREEDY, use_tqdm=False)[0]
    other = llm.generate({**text, "cache_salt": "other"}, GREEDY, use_tqdm=False)[0]
    assert again.num_cached_tokens > 0 and other.num_cached_tokens == 0


def test_a_salt_that_is_not_a_str_is_refused(llm):
    with pytest.raises(TypeError, match=r"prompt 1: cache_salt must be a str, got int \(5\)"):
        llm.generate([PROMPT, {"prompt_token_ids": PROMPT, "cache_salt": 5}], GREEDY, use_tqdm=False)
    assert llm.generate([_salted("x")], GREEDY, use_tqdm=False)[0].outputs[0].token_ids  # still serving
    with pytest.raises(ValueError, match=r"unsupported prompt fields \['cache_salt'\]"):  # never ignored
        llm.beam_search([_salted("x")], BeamSearchParams(beam_width=2, max_tokens=1))
