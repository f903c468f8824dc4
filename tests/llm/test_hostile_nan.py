"""NaN logits end their request with finish_reason "error" (vLLM's FinishReason.ERROR) instead of emitting the
arbitrary id argmax returns; the other requests of the batch, and later calls, are unchanged.

The model is a tiny Llama whose embedding row ``POISON`` is NaN: a prompt holding that token has NaN logits from
its first step; a request pushed to sample it (logit_bias) has finite logits for one step and NaN ones after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hf_models import save_tiny_model

from jaxllm import SamplingParams

POISON = 200
CLEAN = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10, 11]}]
GREEDY = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, seed=3, max_tokens=5, ignore_eos=True)
LOGPROBS = SamplingParams(temperature=0.8, top_p=0.9, seed=4, max_tokens=5, ignore_eos=True, logprobs=2)


@pytest.fixture(scope="module")
def nan_llm(tmp_path_factory):
    from jaxllm import LLM

    path = tmp_path_factory.mktemp("nan_llama")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=256, tie_word_embeddings=False)
    with torch.no_grad():
        model.model.embed_tokens.weight[POISON] = float("nan")
    model.save_pretrained(str(path))
    return LLM(str(path), skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True)


def _tokens(outs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("params", [GREEDY, SEEDED, LOGPROBS], ids=["greedy", "seeded", "logprobs"])
def test_nan_prompt_finishes_with_error_alone(nan_llm, params):
    alone = _tokens(nan_llm.generate(CLEAN, [GREEDY, params], use_tqdm=False))
    poisoned = {"prompt_token_ids": [5, POISON, 7]}
    outs = nan_llm.generate([CLEAN[0], poisoned, CLEAN[1]], [GREEDY, params, params], use_tqdm=False)
    bad = outs[1].outputs[0]
    assert bad.finish_reason == "error" and bad.token_ids == [] and bad.stop_reason is None
    assert [outs[0].outputs[0].token_ids, outs[2].outputs[0].token_ids] == alone
    assert all(o.outputs[0].finish_reason == "length" for o in (outs[0], outs[2]))
    # the poisoned request's blocks (NaN K/V) are free again: later calls are unchanged
    assert _tokens(nan_llm.generate(CLEAN, [GREEDY, params], use_tqdm=False)) == alone
    assert not nan_llm.llm_engine.has_unfinished_requests()


def test_nan_after_a_token_keeps_the_tokens_before(nan_llm):
    """The first token is finite (forced by logit_bias); the next step's logits are NaN: the request ends with
    that one token (the placeholder of asynchronous scheduling for the missing one is dropped)."""
    alone = _tokens(nan_llm.generate(CLEAN, GREEDY, use_tqdm=False))
    forced = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True, logit_bias={POISON: 100.0}, logprobs=1)
    outs = nan_llm.generate([CLEAN[0], {"prompt_token_ids": [3, 4]}, CLEAN[1]], [GREEDY, forced, GREEDY],
                            use_tqdm=False)
    bad = outs[1].outputs[0]
    assert bad.finish_reason == "error" and bad.token_ids == [POISON]
    assert len(bad.logprobs) == 1 and np.isfinite(bad.cumulative_logprob)
    assert [outs[0].outputs[0].token_ids, outs[2].outputs[0].token_ids] == alone


def test_nan_with_n_samples_and_metrics(nan_llm):
    """Every sample of a poisoned prompt ends with "error"; vLLM's request_success metric counts it."""
    outs = nan_llm.generate([{"prompt_token_ids": [POISON, 1]}], SamplingParams(n=2, seed=1, max_tokens=3),
                            use_tqdm=False)
    assert [c.finish_reason for c in outs[0].outputs] == ["error", "error"]
    success = {m.labels["finished_reason"]: m.value for m in nan_llm.get_metrics()
               if m.name == "vllm:request_success"}
    assert success["error"] >= 1
