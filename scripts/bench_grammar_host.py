"""The engine's host time per step with and without structured outputs, without a model: B1's shape (256
requests, one of the 8 JSON schemas of ``jaxllm bench --structured`` each, Qwen3's 151,936-token vocabulary)
on an HF tokenizer, through ``LLMEngine`` with asynchronous scheduling and a runner that has no device.

    python scripts/bench_grammar_host.py --tokenizer .benchtok [--requests 256] [--output-len 128]

The runner does the host half of the real one (``build_sampling_metadata`` + ``pack_sampling_metadata``: the
step's one host-to-device buffer, with the bitmask rows) and "samples" a random allowed token per row (random
weights make the constrained outputs random walks through the grammars, as in the bench); the picking is timed
apart and left out. So the host ms per step it prints (JSON: plain, structured, and the phases of
``HOST_SECONDS``) is what the engine adds around the device: scheduling, the grammars, the bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from jaxllm.engine.batch import RunnerOutput
from jaxllm.runner.sampling_metadata import build_sampling_metadata, pack_sampling_metadata


def pick_allowed(masks: np.ndarray, n_tok: int, rng: np.random.Generator, tries: int = 64) -> list[int]:
    """A random allowed token per row of ``masks`` [S, W]: ``tries`` random candidates, else a full scan."""
    cand = rng.integers(0, n_tok, (masks.shape[0], tries))
    ok = (np.take_along_axis(masks, cand // 32, 1) >> (cand % 32)) & 1
    out = []
    for i in range(masks.shape[0]):
        hit = np.flatnonzero(ok[i])
        if len(hit):
            out.append(int(cand[i, hit[0]]))
        else:
            bits = (masks[i, : -(-n_tok // 32), None] >> np.arange(32)) & 1
            out.append(int(rng.choice(np.flatnonzero(bits.reshape(-1)[:n_tok]))))
    return out


class HostOnlyRunner:
    """``dispatch(batch, sample=False)`` / ``launch_sampler`` / ``fetch`` as ``ModelRunner``, with no device:
    the sampling metadata is built and packed as for a real sampler; tokens are random (allowed) ones."""

    def __init__(self, vocab_size: int, n_tok: int) -> None:
        self.vocab_size, self.n_tok = vocab_size, n_tok
        self.rng = np.random.default_rng(0)
        self.pick_seconds = 0.0

    def dispatch(self, batch, sample: bool = True):
        step = {"batch": batch, "out": None}
        if sample:
            self.launch_sampler(step)
        return step

    def launch_sampler(self, step) -> None:
        seqs = step["batch"].seqs
        rows = 1 << (len(seqs) - 1).bit_length()  # a power-of-two bucket
        pack_sampling_metadata(*build_sampling_metadata(seqs, rows, self.vocab_size), rows)
        t0 = time.perf_counter()
        rows = [s for s in seqs if s.sample]
        masked = [s for s in rows if s.grammar_bitmask is not None]
        tokens = dict(zip((s.seq_id for s in rows), self.rng.integers(0, self.n_tok, len(rows)).tolist()))
        if masked:
            picks = pick_allowed(np.stack([s.grammar_bitmask for s in masked]), self.n_tok, self.rng)
            tokens.update(zip((s.seq_id for s in masked), picks))
        step["out"] = RunnerOutput(sampled=tokens)
        self.pick_seconds += time.perf_counter() - t0  # not the engine's: left out of the figures

    def fetch(self, step) -> RunnerOutput:
        return step["out"]

    def execute(self, batch) -> RunnerOutput:
        return self.fetch(self.dispatch(batch))


def run(tokenizer, args, structured: bool) -> dict:
    from jaxllm.bench.structured import SCHEMAS
    from jaxllm.engine.engine import LLMEngine
    from jaxllm.sampling_params import RequestOutputKind, SamplingParams
    from jaxllm.structured_outputs import StructuredOutputsParams
    from jaxllm.structured_outputs.step import HOST_SECONDS

    runner = HostOnlyRunner(args.vocab, len(tokenizer))
    n, out_len = args.requests, args.output_len
    eng = LLMEngine(runner, num_blocks=n * (16 + out_len) // 16 + n, block_size=16, max_num_seqs=n,
                    max_num_batched_tokens=8192, max_model_len=4096, vocab_size=args.vocab,
                    eos_token_ids=[tokenizer.eos_token_id], tokenizer=tokenizer, async_scheduling=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        so = StructuredOutputsParams(json=SCHEMAS[i % len(SCHEMAS)]) if structured else None
        sp = SamplingParams(temperature=0.6, max_tokens=out_len, ignore_eos=True, detokenize=False,
                            structured_outputs=so, output_kind=RequestOutputKind.FINAL_ONLY)  # as LLM.generate
        eng.add_request(str(i), rng.integers(0, len(tokenizer), 16).tolist(), sp)
    if eng._grammars is not None:
        eng._grammars._llg_tokenizer("bench")  # start-up work, as the bench waits for it
        for state in eng._grammars._cache.values():
            state.result()
    host0, steps = dict(HOST_SECONDS), 0
    t0 = time.perf_counter()
    while eng.has_unfinished_requests():
        eng.step()
        steps += 1
    wall = time.perf_counter() - t0 - runner.pick_seconds
    # the grammar phases (the sampler's launch holds the runner's token picking here: left out)
    phases = {k: v - host0.get(k, 0.0) for k, v in HOST_SECONDS.items() if k != "sampler_launch"}
    return {"steps": steps, "host_ms_per_step": round(1e3 * wall / steps, 3),
            **{k: round(1e3 * v / steps, 3) for k, v in sorted(phases.items())}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="an HF tokenizer folder")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=151936)
    args = p.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    print(json.dumps({"plain": run(tok, args, False), "structured": run(tok, args, True)}))


if __name__ == "__main__":
    main()
