"""``LLM(logprobs_mode=...)`` end to end on a tiny random Llama against transformers: sample logprobs, ranks and
prompt logprobs of each mode, and the same generated tokens whatever the mode."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import hf_logits, save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, SamplingParams

STEPS = 5
PARAMS = [  # SamplingParams keywords: a random row with top-k, penalties and bias; a greedy one
    {"temperature": 0.8, "top_k": 4, "seed": 7, "presence_penalty": 0.5, "logit_bias": {5: 1.0}, "logprobs": 6,
     "prompt_logprobs": 3},
    {"temperature": 0.0, "repetition_penalty": 1.5, "logprobs": 2, "prompt_logprobs": 2},
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("logprobs_mode")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=0, bos_token_id=None)
    save_tokenizer_with_template(path)
    return path, model


_LLMS: dict[tuple, LLM] = {}
_RUNS: dict[str, list] = {}
# every step speculates (tests/llm/test_spec_decode_llm.py)
SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3, "prompt_lookup_min": 1,
        "disable_by_batch_size": 4}


def llm(model_path, mode, spec=False):
    if (mode, spec) not in _LLMS:
        _LLMS[mode, spec] = LLM(str(model_path[0]), max_num_seqs=2, max_num_batched_tokens=32, max_model_len=64,
                                enforce_eager=True, logprobs_mode=mode, speculative_config=SPEC if spec else None)
    return _LLMS[mode, spec]


def run(model_path, mode):
    if mode not in _RUNS:
        params = [SamplingParams(max_tokens=STEPS, ignore_eos=True, **kw) for kw in PARAMS]
        _RUNS[mode] = llm(model_path, mode).generate(["a b c", "x y"], params, use_tqdm=False)
    return _RUNS[mode]


def reference_values(logits, kw, prompt, output, mode):
    """vLLM's values of one step (float64): raw logits, or bias, penalties, temperature and top-k applied;
    log_softmax for the *_logprobs modes."""
    x = np.array(logits, np.float64)
    if mode.startswith("processed"):
        for t, b in kw.get("logit_bias", {}).items():
            x[t] += b
        seen = np.isin(np.arange(x.size), prompt + output)
        rep = kw.get("repetition_penalty", 1.0)
        x = np.where(seen, np.where(x > 0, x / rep, x * rep), x)
        x = x - kw.get("presence_penalty", 0.0) * np.isin(np.arange(x.size), output)
        if kw["temperature"] > 0:
            x = x / kw["temperature"]
            x = np.where(x >= np.sort(x)[::-1][kw["top_k"] - 1], x, -np.inf)
    if mode.endswith("logprobs"):
        m = x.max()
        x = x - (m + np.log(np.exp(x - m).sum()))
    return x


def close(a, b):
    return (np.isneginf(a) and np.isneginf(b)) or abs(a - b) < 2e-4


@pytest.mark.parametrize("mode", ["raw_logits", "processed_logprobs", "processed_logits"])
def test_sample_and_prompt_logprobs_follow_the_mode(model_path, mode):
    model = model_path[1]
    for out, kw in zip(run(model_path, mode), PARAMS):
        c, prompt = out.outputs[0], out.prompt_token_ids
        logits = hf_logits(model, [prompt + c.token_ids[:-1]])[0]
        for i, (t, d) in enumerate(zip(c.token_ids, c.logprobs)):
            want = reference_values(logits[len(prompt) - 1 + i], kw, prompt, c.token_ids[:i], mode)
            assert close(d[t].logprob, want[t]) and np.isfinite(d[t].logprob)
            assert d[t].rank == 1 + int((want > want[t]).sum())
            top = sorted(((lp.rank, tok, lp.logprob) for tok, lp in d.items() if lp.rank <= kw["logprobs"]))
            assert [r for r, _, _ in top][:1] == [1]
            for _, tok, value in top:
                assert close(value, want[tok]), (mode, i, tok, value, want[tok])
            if mode.startswith("processed") and kw["temperature"] > 0:  # top_k=4 of 6: two removed entries
                assert sum(np.isneginf(lp.logprob) for lp in d.values()) == 2
        raw_mode = "raw_" + mode.split("_")[1]  # prompt tokens see no sampling parameter
        for j, d in enumerate(out.prompt_logprobs[1:], 1):
            t, want = prompt[j], reference_values(logits[j - 1], kw, prompt, [], raw_mode)
            assert close(d[t].logprob, want[t])
            assert d[t].rank == 1 + int((want > want[t]).sum())


def test_the_mode_never_changes_the_generated_tokens(model_path):
    base = [o.outputs[0].token_ids for o in run(model_path, "raw_logprobs")]
    for mode in ("raw_logits", "processed_logprobs", "processed_logits"):
        assert [o.outputs[0].token_ids for o in run(model_path, mode)] == base, mode


def test_speculative_verification_reports_the_same_processed_values(model_path):
    """n-gram drafts verified by the sampler: the emitted tokens and their processed logprobs are those of the
    plain engine (each output position draws from the same key and distribution)."""
    prompts = [{"prompt_token_ids": [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7]}, {"prompt_token_ids": [9, 9, 9, 9, 9]}]
    params = SamplingParams(temperature=0.9, top_k=5, top_p=0.9, seed=3, max_tokens=12, logprobs=6,
                            ignore_eos=True)
    want = llm(model_path, "processed_logprobs").generate(prompts, params, use_tqdm=False)
    spec = llm(model_path, "processed_logprobs", spec=True)
    got = spec.generate(prompts, params, use_tqdm=False)
    assert spec.llm_engine.stats.spec_decode_num_draft_tokens > 0
    for w, g in zip(want, got):
        w, g = w.outputs[0], g.outputs[0]
        assert g.token_ids == w.token_ids
        for lw, lg in zip(w.logprobs, g.logprobs):
            finite = lambda d: {t: lp for t, lp in d.items() if np.isfinite(lp.logprob)}
            assert finite(lg).keys() == finite(lw).keys()
            assert all(lg[t].rank == lw[t].rank and abs(lg[t].logprob - lw[t].logprob) < 1e-4 for t in finite(lw))
            assert sum(np.isneginf(lp.logprob) for lp in lg.values()) >= 1  # top_k=5 of 6 entries
