"""Prefix caching stays exact under a rope that depends on the sequence's length (Phi-3 longrope, dynamic NTK):
a long prompt sharing its prefix with a short one that ran before takes none of its blocks (they were rotated for
the short length), while prompts of one rope regime still share theirs. Greedy tokens equal caching off and
transformers' cached generation of each prompt alone (logprobs within 1e-4). Hits are read from
``RequestOutput.num_cached_tokens`` (blocks of 8)."""

from __future__ import annotations

import numpy as np
import pytest
from hf_models import hf_cached_logprobs, save_tiny_model

from jaxllm import LLM, SamplingParams

LONGROPE = {"rope_type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [2.0 + 0.5 * i for i in range(8)], "original_max_position_embeddings": 24}
# (arch, config overrides, [(prompt length, expected cached tokens)] run one after another on one prefix)
CASES = {
    "phi3-longrope": ("Phi3ForCausalLM", {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
                                          "rope_scaling": LONGROPE, "original_max_position_embeddings": 24,
                                          "max_position_embeddings": 96},
                      [(20, 0), (30, 0), (34, 24), (22, 16)]),  # short, long, long (hits), short (hits)
    "llama-dynamic": ("LlamaForCausalLM", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
                                           "max_position_embeddings": 16,
                                           "initializer_range": 0.1},  # sharp enough that a wrong block shows
                      [(12, 0), (14, 8), (20, 0), (20, 16), (22, 0)]),  # a long length shares only with itself
}
PARAMS = SamplingParams(temperature=0.0, max_tokens=6, logprobs=0, ignore_eos=True)


def _prompts(lengths, seed):
    """Prompts of the given lengths, all prefixes of one random sequence; a length seen before gets its third
    last token changed (an equal-length prompt that shares all blocks but its last)."""
    ids = [int(t) for t in np.random.RandomState(seed).randint(3, 256, max(lengths))]
    out, seen = [], set()
    for n in lengths:
        p = ids[:n]
        if n in seen:
            p = p[:-3] + [(p[-3] + 1) % 253 + 3] + p[-2:]
        seen.add(n)
        out.append(p)
    return out


def _run_one_by_one(llm, prompts):
    outs = [llm.generate([{"prompt_token_ids": p}], PARAMS, use_tqdm=False)[0] for p in prompts]
    return [o.num_cached_tokens for o in outs], [o.outputs[0] for o in outs]


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefix_hits_follow_the_rope_regime(tmp_path, case):
    arch, overrides, plan = CASES[case]
    hf = save_tiny_model(tmp_path, arch, **overrides)
    prompts = _prompts([n for n, _ in plan], seed=7)
    kw = {"skip_tokenizer_init": True, "max_num_seqs": 2, "max_num_batched_tokens": 16, "block_size": 8,
          "num_gpu_blocks_override": 64, "enforce_eager": True}  # room for every prompt's blocks: no eviction
    cached, outs = _run_one_by_one(LLM(str(tmp_path), **kw), prompts)
    assert cached == [c for _, c in plan]
    uncached, plain = _run_one_by_one(LLM(str(tmp_path), enable_prefix_caching=False, **kw), prompts)
    assert uncached == [0] * len(plan)
    for p, out, ref in zip(prompts, outs, plain):
        ids, rows = hf_cached_logprobs(hf, p, PARAMS.max_tokens)
        assert out.token_ids == ref.token_ids == ids
        for got in (out, ref):
            assert max(abs(lp[t].logprob - row[t]) for t, lp, row in zip(ids, got.logprobs, rows)) < 1e-4


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_recomputed_sequence_keeps_its_rotation(tmp_path, prefix_caching):
    """A short-prompt sequence preempted (recompute) after it grew past longrope's original length re-prefills its
    prompt and output tokens in one chunk: each is rotated as when first written (the prompt short, later tokens
    by their own length), so it still equals transformers' cached generation."""
    arch, overrides, _ = CASES["phi3-longrope"]
    hf = save_tiny_model(tmp_path, arch, **overrides)
    llm = LLM(str(tmp_path), skip_tokenizer_init=True, max_num_seqs=2, max_num_batched_tokens=64, block_size=8,
              num_gpu_blocks_override=6, preemption_mode="recompute", enable_prefix_caching=prefix_caching,
              enforce_eager=True)
    rng = np.random.RandomState(0)
    prompts = [[int(t) for t in rng.randint(3, 256, 20)] for _ in range(2)]
    params = SamplingParams(temperature=0.0, max_tokens=14, logprobs=0, ignore_eos=True)  # 34 tokens > 24
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    assert llm.llm_engine.stats.num_preemptions >= 1
    for p, out in zip(prompts, outs):
        ids, rows = hf_cached_logprobs(hf, p, params.max_tokens)
        got = out.outputs[0]
        assert got.token_ids == ids
        assert max(abs(lp[t].logprob - row[t]) for t, lp, row in zip(ids, got.logprobs, rows)) < 1e-4
