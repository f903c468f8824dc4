"""The requests of the multi-process tests, shared by the test and its worker processes."""

from __future__ import annotations

from jaxllm import SamplingParams

PROMPTS = [{"prompt_token_ids": [(7 * i + j) % 250 + 3 for j in range(n)]} for i, n in enumerate((9, 17, 5, 12))]
PARAMS = [SamplingParams(temperature=0, max_tokens=5, ignore_eos=True),
          SamplingParams(temperature=1.0, seed=11, max_tokens=5, ignore_eos=True),
          SamplingParams(temperature=0.8, max_tokens=4, ignore_eos=True),  # unseeded: the LLM's seed
          SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)]


def llm_kwargs() -> dict:
    return {"skip_tokenizer_init": True, "max_num_seqs": 4, "max_num_batched_tokens": 32, "enforce_eager": True,
            "seed": 5}
