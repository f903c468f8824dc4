"""LLM(kv_cache_dtype="fp8" | "fp8_e5m2"): fp8 cache (1 byte/element -> more blocks for the same memory); greedy
follows the fp32-cache engine; where they part, the fp32 engine's top tokens were a near tie (flat tiny-model logits)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import save_tiny_model

from jaxllm import LLM, SamplingParams

PROMPTS = [[int(x) for x in np.random.RandomState(i).randint(1, 256, n)] for i, n in enumerate((5, 19, 33, 12, 40, 7))]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama_fp8kv_llm")
    save_tiny_model(path, "LlamaForCausalLM", vocab_size=256)
    return str(path)


def generate(path, logprobs=None, **kw):
    llm = LLM(path, skip_tokenizer_init=True, max_num_seqs=4, max_num_batched_tokens=32, enforce_eager=True,
              kv_cache_memory_bytes=1 << 20, **kw)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=logprobs)
    return llm, llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)


@pytest.fixture(scope="module")
def reference(tiny_llama):
    llm, outs = generate(tiny_llama, logprobs=5)
    return llm.llm_engine.runner.num_blocks, [o.outputs[0] for o in outs]


@pytest.mark.parametrize("kv_cache_dtype,tp", [("fp8", 1), ("fp8_e5m2", 1), ("fp8_e4m3", 2)])
def test_fp8_kv_cache_greedy_follows_fp32_cache(tiny_llama, reference, kv_cache_dtype, tp):
    ref_blocks, ref = reference
    llm, outs = generate(tiny_llama, kv_cache_dtype=kv_cache_dtype, tensor_parallel_size=tp)
    runner = llm.llm_engine.runner
    want = jnp.float8_e5m2 if kv_cache_dtype == "fp8_e5m2" else jnp.float8_e4m3fn
    assert all(c.dtype == want for c in runner.kv_caches)
    if tp == 1:  # float32 model: 4 bytes per cached element vs 1
        assert runner.num_blocks == 4 * ref_blocks
    identical = 0
    for r, o in zip(ref, outs):
        got = o.outputs[0].token_ids
        i = next((j for j, (a, b) in enumerate(zip(r.token_ids, got)) if a != b), None)
        if i is None:
            identical += 1
            continue
        lp = {t: getattr(v, "logprob", v) for t, v in r.logprobs[i].items()}
        assert got[i] in lp and lp[r.token_ids[i]] - lp[got[i]] < 0.02, (i, r.token_ids, got, lp)
    assert identical >= len(PROMPTS) // 2
