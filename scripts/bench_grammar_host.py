"""The host work structured outputs add to a step, without a model: B1's shape (256 rows, one of the 8 JSON
schemas of ``jaxllm bench --structured`` each, Qwen3's 151,936-token vocabulary) on an HF tokenizer.

    python scripts/bench_grammar_host.py --tokenizer .benchtok [--rows 256] [--steps 60] [--vocab 151936]

Each step does what the engine does between two samplers: feed every row's sampled token to its grammar and fill
the next step's bitmasks (``GrammarCompiler.advance_and_fill``, llguidance's thread pool), then pack the sampling
metadata (``build_sampling_metadata`` + ``pack_sampling_metadata``, the step's one host-to-device buffer). The
"sampled" tokens are random allowed ones (random weights make the constrained outputs random walks through the
grammars, as in the bench). Prints ms per step of each phase (median over the steps) as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


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
            allowed = np.flatnonzero(bits.reshape(-1)[:n_tok])
            out.append(int(rng.choice(allowed)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="an HF tokenizer folder")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--vocab", type=int, default=151936)
    args = p.parse_args()
    from transformers import AutoTokenizer

    from jaxllm.bench.structured import SCHEMAS
    from jaxllm.engine.batch import ScheduledBatch, ScheduledSeq
    from jaxllm.runner.sampling_metadata import build_sampling_metadata, pack_sampling_metadata
    from jaxllm.sampling_params import SamplingParams
    from jaxllm.structured_outputs import StructuredOutputsParams
    from jaxllm.structured_outputs.grammar import GrammarCompiler
    from jaxllm.structured_outputs.step import GrammarStep

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    grammars = GrammarCompiler(tok, args.vocab, (tok.eos_token_id,))
    sp = SamplingParams(temperature=0.6, max_tokens=4096, ignore_eos=True)
    seqs = []
    for i in range(args.rows):
        state = grammars.new_state(f"r{i}", StructuredOutputsParams(json=SCHEMAS[i % len(SCHEMAS)]))
        state.wait()
        seqs.append(ScheduledSeq(i, [1, 2, 3], 2, 1, [0], 2, sp, True, 0, i, grammar=state))
    batch = ScheduledBatch(seqs)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"grammar": [], "metadata": []}
    tokens = None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        states = [s.grammar for s in batch.seqs] if tokens else []
        GrammarStep(states, tokens or [], grammars.mask_fill(batch)).result()
        t1 = time.perf_counter()
        build = build_sampling_metadata(batch.seqs, args.rows, args.vocab)
        pack_sampling_metadata(*build, args.rows)
        t2 = time.perf_counter()
        times["grammar"].append(t1 - t0)
        times["metadata"].append(t2 - t1)
        masks = np.stack([s.grammar_bitmask for s in batch.seqs])
        tokens = pick_allowed(masks, len(tok), rng)
    result = {k: round(1e3 * statistics.median(v), 3) for k, v in times.items()}
    result.update(rows=args.rows, steps=args.steps, vocab=args.vocab, aborted=sum(s.grammar.failed for s in seqs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
