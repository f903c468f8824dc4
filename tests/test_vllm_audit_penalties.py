"""vLLM's penalty semantics, end to end against a transformers reference: ``repetition_penalty`` scales the logits
of every token seen in the prompt or the output (divides a positive logit, multiplies a negative one);
``presence_penalty`` / ``frequency_penalty`` subtract from the logits of tokens of the output only (once / once
per occurrence). Greedy requests are penalized too."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import hf_logits, save_tiny_model, save_tokenizer_with_template

from jaxllm import LLM, SamplingParams

STEPS = 8
_PLAIN: dict[tuple[int, ...], list[int]] = {}  # unpenalized reference outputs, per prompt


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit_penalties")
    model = save_tiny_model(path, "LlamaForCausalLM", vocab_size=448, eos_token_id=0, bos_token_id=None)
    save_tokenizer_with_template(path)
    llm = LLM(str(path), max_num_seqs=4, max_num_batched_tokens=32, max_model_len=64, enforce_eager=True)
    return llm, model


def reference_greedy(model, prompt: list[int], rep=1.0, presence=0.0, frequency=0.0) -> list[int]:
    """Greedy decoding with vLLM's penalties applied to transformers' float32 logits."""
    ids = list(prompt)
    for _ in range(STEPS):
        logits = hf_logits(model, [ids])[0, -1].astype(np.float64)
        out = ids[len(prompt):]
        seen = np.zeros(logits.shape, bool)
        seen[ids] = True
        logits = np.where(seen, np.where(logits > 0, logits / rep, logits * rep), logits)
        counts = np.bincount(out, minlength=logits.shape[0]) if out else np.zeros(logits.shape)
        logits = logits - frequency * counts - presence * (counts > 0)
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("penalties", [
    {"repetition_penalty": 1.8},
    {"repetition_penalty": 0.5},
    {"presence_penalty": 1.5},
    {"presence_penalty": -2.0},
    {"frequency_penalty": 0.8},
    {"frequency_penalty": -1.0, "presence_penalty": 0.3, "repetition_penalty": 1.3},
])
def test_penalties_follow_vllms_rules(setup, penalties):
    llm, model = setup
    prompts = ["a", "a b a b a", "x y z"]
    names = {"repetition_penalty": "rep", "presence_penalty": "presence", "frequency_penalty": "frequency"}
    params = SamplingParams(temperature=0.0, max_tokens=STEPS, ignore_eos=True, **penalties)
    outs = llm.generate(prompts, params, use_tqdm=False)
    changed = False
    for out in outs:
        want = reference_greedy(model, out.prompt_token_ids, **{names[k]: v for k, v in penalties.items()})
        assert out.outputs[0].token_ids == want, (out.prompt, penalties)
        key = tuple(out.prompt_token_ids)
        if key not in _PLAIN:
            _PLAIN[key] = reference_greedy(model, out.prompt_token_ids)
        changed |= want != _PLAIN[key]
    assert changed, "the penalty changed no reference output: the test would not notice it being ignored"


def test_logprobs_are_the_raw_model_logprobs(setup):
    """vLLM's default ``logprobs_mode="raw_logprobs"``: the returned logprobs and ranks are the model's, before
    temperature, penalties, logit_bias or top-k/top-p change what is sampled."""
    llm, model = setup
    bias = {5: 3.0, 6: 3.0, 7: 3.0}
    params = SamplingParams(temperature=1.5, top_k=3, seed=1, max_tokens=6, ignore_eos=True, logprobs=2,
                            presence_penalty=0.5, logit_bias=bias)
    out = llm.generate("a b", params, use_tqdm=False)[0]
    c, prompt = out.outputs[0], out.prompt_token_ids
    assert set(c.token_ids) <= set(bias)  # the bias and top-k decided what was sampled ...
    ref = hf_logits(model, [prompt + c.token_ids[:-1]])[0].astype(np.float64)
    ref = ref - np.log(np.exp(ref - ref.max(-1, keepdims=True)).sum(-1, keepdims=True)) - ref.max(-1, keepdims=True)
    for i, (t, d) in enumerate(zip(c.token_ids, c.logprobs)):
        row = ref[len(prompt) - 1 + i]
        assert abs(d[t].logprob - row[t]) < 1e-4  # ... but the logprobs are the model's own
        assert d[t].rank == 1 + int((row > row[t]).sum())
        top = [int(x) for x in np.argsort(-row)[:2]]
        assert all(abs(d[x].logprob - row[x]) < 1e-4 and d[x].rank == r for r, x in enumerate(top, 1))
