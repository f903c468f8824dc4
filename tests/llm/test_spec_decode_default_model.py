"""n-gram speculative decoding on the embedded default model: on a prompt whose answer repeats it, drafts get
accepted and the greedy output is token-identical to plain decoding. One LLM gives both: with
``disable_by_batch_size=1`` a request alone speculates, two running together decode plainly."""

from __future__ import annotations

import pytest

from jaxllm.default_model import INSTALL_HINT, default_model_available

pytestmark = pytest.mark.skipif(not default_model_available(), reason=f"default model not installed ({INSTALL_HINT})")

PROMPT = "Copy the following list exactly:\n1. apples\n2. bananas\n3. cherries\n4. dates\n5. elderberries\n"


def test_greedy_identical_and_drafts_accepted_on_a_repeating_prompt():
    from jaxllm import LLM, SamplingParams

    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2,
            "disable_by_batch_size": 1}
    # float32: a verifying step computes several positions per query; bf16 rounding there could flip a
    # near-tied argmax against one-token decoding
    llm = LLM(model="HuggingFaceTB/SmolLM2-135M-Instruct", dtype="float32", enforce_eager=True, max_num_seqs=2,
              max_num_batched_tokens=64, speculative_config=spec)
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    stats = llm.llm_engine.stats
    alone = llm.generate(PROMPT, params, use_tqdm=False)[0].outputs[0]
    accepted = stats.spec_decode_num_accepted_tokens
    assert accepted > 5
    pair = llm.generate([PROMPT, PROMPT], params, use_tqdm=False)
    assert stats.spec_decode_num_accepted_tokens == accepted  # two running sequences: no speculation
    assert [o.outputs[0].token_ids for o in pair] == [alone.token_ids] * 2
