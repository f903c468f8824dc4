"""Engine host overhead (CPU time) per step with a no-op runner: 256 sequences x 1024 decode steps.

Run: python tests/engine/bench_engine_overhead.py  (not a test: prints numbers, asserts nothing)."""

import pathlib
import random
import sys
import time

sys.path[:0] = [
    str(pathlib.Path(__file__).resolve().parents[2]),
    str(pathlib.Path(__file__).resolve().parent),
]
from jaxllm.engine import LLMEngine, RunnerOutput
from jaxllm.sampling_params import SamplingParams


class NoopRunner:
    def __init__(self, tokens):
        self.tokens = tokens
        self.i = 0

    def execute(self, batch):
        self.i += 1
        t = self.tokens
        return RunnerOutput(
            sampled={s.seq_id: t[(s.seq_id + s.output_index) % len(t)] for s in batch.seqs if s.sample}
        )


def run(tokenizer, n=256, prompt_len=256, max_tokens=1024, caching=True, stop=None):
    vocab = len(tokenizer) if tokenizer else 32000
    toks = (
        tokenizer.encode(
            "The quick brown fox jumps over the lazy dog. 你好世界 😀 " * 20, add_special_tokens=False
        )
        if tokenizer
        else list(range(100, 400))
    )
    runner = NoopRunner(toks)
    eng = LLMEngine(
        runner,
        num_blocks=n * (prompt_len + max_tokens) // 16 + 16,
        block_size=16,
        max_num_seqs=n,
        max_num_batched_tokens=8192,
        max_model_len=4096,
        vocab_size=vocab,
        enable_prefix_caching=caching,
        tokenizer=tokenizer,
        eos_token_ids=None,
    )
    rng = random.Random(0)
    for i in range(n):
        eng.add_request(
            str(i),
            [rng.randrange(vocab) for _ in range(prompt_len)],
            SamplingParams(max_tokens=max_tokens, ignore_eos=True, stop=stop),
        )
    t0 = time.process_time()
    steps = 0
    while eng.has_unfinished_requests():
        eng.step()
        steps += 1
    dt = time.process_time() - t0
    print(
        f"tokenizer={'bpe' if tokenizer else None} caching={caching} stop={stop}: {steps} steps, "
        f"{dt:.2f}s, {dt / steps * 1e3:.2f} ms/step, {dt / (n * max_tokens) * 1e6:.2f} us/token"
    )


if __name__ == "__main__":
    from bpe_tokenizer import bpe_tokenizer

    run(None, caching=False)
    run(None)
    run(bpe_tokenizer())
    run(bpe_tokenizer(), stop=["zzz", "STOP"])
