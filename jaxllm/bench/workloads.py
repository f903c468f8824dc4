"""Benchmark workloads (../shared/BENCHMARKS.md): random weights of a real architecture, random prompt ids.

Token ids are uniform over the vocabulary and lengths uniform over their ranges (or lognormal, clipped to
them), both from one seeded RNG, so every run (ours and the peer's) sees the same requests.

"ShareGPT" stands in for vLLM's ShareGPT benchmark (ShareGPT_V3_unfiltered_cleaned_split): lognormal prompt and
output lengths with the means the vLLM paper reports for it (Kwon et al., SOSP 2023, Fig. 11a: 161 input and
338 output tokens on average) and sigma 1.0 / 0.9 (its long right tails), clipped as vLLM's ShareGPT sampler
filters (at least 4 tokens each, prompt <= 1024, prompt + output <= 2048); 2,000 requests, temperature 0.8,
top_p 0.95 and a seed per request, as a chat deployment sends them.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")  # also linked as benchmarks/configs


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    config: str  # path of an HF config.json
    num_requests: int
    prompt_len: tuple[int, int]  # inclusive range
    output_len: tuple[int, int]  # inclusive range
    temperature: float = 0.0
    seed: int = 0
    # > 0: each prompt repeats a random segment of this many tokens (text n-gram drafts can predict; random
    # weights accept ~no draft of random prompts)
    prompt_period: int = 0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    per_request_seeds: bool = False  # request i samples with SamplingParams(seed=seed + i)
    # lognormal lengths: (prompt mean, prompt sigma, output mean, output sigma) of the token counts, clipped
    # to prompt_len / output_len; None: uniform over those ranges
    lognormal: tuple[float, float, float, float] | None = None

    @classmethod
    def from_json(cls, text: str) -> Workload:
        """The workload a peer subprocess receives on its command line (``json.dumps(dataclasses.asdict(w))``)."""
        spec = json.loads(text)
        lognormal = spec.get("lognormal")
        return cls(**{**spec, "prompt_len": tuple(spec["prompt_len"]), "output_len": tuple(spec["output_len"]),
                      "lognormal": None if lognormal is None else tuple(lognormal)})

    def requests(self, vocab_size: int) -> tuple[list[list[int]], list[int]]:
        """(prompt token ids, output lengths), deterministic in ``seed``."""
        rng = np.random.default_rng(self.seed)
        if self.lognormal:
            plens = _lognormal(rng, *self.lognormal[:2], self.prompt_len, self.num_requests)
            olens = _lognormal(rng, *self.lognormal[2:], self.output_len, self.num_requests)
        else:
            plens = rng.integers(self.prompt_len[0], self.prompt_len[1] + 1, self.num_requests)
            olens = rng.integers(self.output_len[0], self.output_len[1] + 1, self.num_requests)
        prompts = [rng.integers(0, vocab_size, n).tolist() for n in plens]
        if self.prompt_period:
            prompts = [(p[:self.prompt_period] * -(-len(p) // self.prompt_period))[:len(p)] for p in prompts]
        return prompts, [int(x) for x in olens]

    def sampling_kwargs(self, i: int) -> dict:
        """SamplingParams fields of request i (temperature, top_p, top_k, min_p and its seed if per-request)."""
        kw = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p}
        return {**kw, "seed": self.seed + i} if self.per_request_seeds else kw

    def hf_config(self) -> dict:
        with open(self.config) as f:
            return json.load(f)


def _lognormal(rng, mean: float, sigma: float, bounds: tuple[int, int], n: int) -> np.ndarray:
    """n integer lengths, lognormal with this mean and log-space sigma, clipped to bounds (inclusive)."""
    mu = np.log(mean) - sigma**2 / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), bounds[0], bounds[1]).astype(np.int64)


def _cfg(name: str) -> str:
    return os.path.normpath(os.path.join(CONFIG_DIR, name))


WORKLOADS = {
    "B1": Workload("B1", _cfg("qwen3-0.6b.json"), 256, (100, 1024), (100, 1024), temperature=0.6),
    "B1-peer": Workload("B1-peer", _cfg("qwen3-0.6b.json"), 256, (100, 1024), (512, 512)),
    "ShareGPT": Workload("ShareGPT", _cfg("qwen3-0.6b.json"), 2000, (4, 1024), (4, 1024), temperature=0.8,
                         top_p=0.95, per_request_seeds=True, lognormal=(161.0, 1.0, 338.0, 0.9)),
    "B2": Workload("B2", _cfg("llama-3.1-8b.json"), 1000, (100, 1024), (256, 256)),
    # B2's request mix on mixture-of-experts architectures (random weights of the real shapes)
    "B2-qwen3-30b-a3b": Workload("B2-qwen3-30b-a3b", _cfg("qwen3-30b-a3b.json"), 1000, (100, 1024), (256, 256)),
    "B2-mixtral-8x7b": Workload("B2-mixtral-8x7b", _cfg("mixtral-8x7b.json"), 1000, (100, 1024), (256, 256)),
}
