"""Benchmark workloads (../shared/BENCHMARKS.md): random weights of a real architecture, random prompt ids.

Token ids are uniform over the vocabulary and lengths uniform over their ranges, both from one seeded RNG,
so every run (ours and the peer's) sees the same requests.
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

    @classmethod
    def from_json(cls, text: str) -> Workload:
        """The workload a peer subprocess receives on its command line (``json.dumps(dataclasses.asdict(w))``)."""
        spec = json.loads(text)
        return cls(**{**spec, "prompt_len": tuple(spec["prompt_len"]), "output_len": tuple(spec["output_len"])})

    def requests(self, vocab_size: int) -> tuple[list[list[int]], list[int]]:
        """(prompt token ids, output lengths), deterministic in ``seed``."""
        rng = np.random.default_rng(self.seed)
        plens = rng.integers(self.prompt_len[0], self.prompt_len[1] + 1, self.num_requests)
        olens = rng.integers(self.output_len[0], self.output_len[1] + 1, self.num_requests)
        prompts = [rng.integers(0, vocab_size, n).tolist() for n in plens]
        if self.prompt_period:
            prompts = [(p[:self.prompt_period] * -(-len(p) // self.prompt_period))[:len(p)] for p in prompts]
        return prompts, [int(x) for x in olens]

    def hf_config(self) -> dict:
        with open(self.config) as f:
            return json.load(f)


def _cfg(name: str) -> str:
    return os.path.normpath(os.path.join(CONFIG_DIR, name))


WORKLOADS = {
    "B1": Workload("B1", _cfg("qwen3-0.6b.json"), 256, (100, 1024), (100, 1024), temperature=0.6),
    "B1-peer": Workload("B1-peer", _cfg("qwen3-0.6b.json"), 256, (100, 1024), (512, 512)),
    "B2": Workload("B2", _cfg("llama-3.1-8b.json"), 1000, (100, 1024), (256, 256)),
    # B2's request mix on mixture-of-experts architectures (random weights of the real shapes)
    "B2-qwen3-30b-a3b": Workload("B2-qwen3-30b-a3b", _cfg("qwen3-30b-a3b.json"), 1000, (100, 1024), (256, 256)),
    "B2-mixtral-8x7b": Workload("B2-mixtral-8x7b", _cfg("mixtral-8x7b.json"), 1000, (100, 1024), (256, 256)),
    # the CPU: the default model's dims (SmolLM2-135M), a notebook's batch of 8 short prompts, 32 tokens each
    "CPU": Workload("CPU", _cfg("smollm2-135m.json"), 8, (16, 64), (32, 32)),
}
