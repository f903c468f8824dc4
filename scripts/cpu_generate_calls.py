"""Successive ``generate`` calls on the CPU: what the first call in a process pays beyond the later ones.

    python scripts/cpu_generate_calls.py [--calls 3] [--output benchmarks/cpu/generate_calls.json]

``LLM(model=jaxllm.DEFAULT_MODEL, dtype="float32")``, every start-up program compiled and run once
(``wait_background``), then ``--calls`` times the CPU workload's shape (8 prompts of 16..64 random token ids, 32
greedy tokens each, as ``jaxllm bench --workload CPU``), each call timed as a whole (wall and process CPU time) and
step by step (``LLMEngine.step``, with the tokens of the steps it launched). Each call draws new prompts: the same
prompts again would hit the prefix cache and skip most of the prefill. ``jaxllm bench`` times a first call, as
does the transformers peer it is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--output")
    args = p.parse_args()
    import jaxllm
    from jaxllm import LLM, SamplingParams

    llm = LLM(model=jaxllm.DEFAULT_MODEL, dtype="float32", max_num_seqs=16, max_num_batched_tokens=256)
    llm.llm_engine.runner.programs.wait_background()
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True, detokenize=False)
    engine, calls, launched = llm.llm_engine, [], []
    dispatch = engine.runner.dispatch
    engine.runner.dispatch = lambda batch, *a, **k: launched.append(batch.num_tokens) or dispatch(batch, *a, **k)
    for c in range(args.calls):
        rng = random.Random(c)
        for i in range(8):
            ids = [rng.randrange(1, 40000) for _ in range(rng.randrange(16, 65))]
            engine.add_request(f"call{c}-{i}", {"prompt_token_ids": ids}, params)
        steps, launched[:] = [], []
        t0, cpu0 = time.perf_counter(), time.process_time()
        while engine.has_unfinished_requests():
            t = time.perf_counter()
            engine.step()
            steps.append(1e3 * (time.perf_counter() - t))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        calls.append({"wall_s": wall, "cpu_s": cpu, "output_tok_s": 8 * 32 / wall, "steps": len(steps),
                      "first_steps_ms": [round(s, 1) for s in steps[:4]], "first_steps_tokens": launched[:4],
                      "median_step_ms": sorted(steps)[len(steps) // 2]})
        print(f"call {c}: {wall:.2f} s ({cpu:.2f} CPU-s), {8 * 32 / wall:.0f} output tok/s, first steps "
              f"{calls[-1]['first_steps_ms']} ms (steps of {launched[:4]} tokens), median step "
              f"{calls[-1]['median_step_ms']:.1f} ms")
    result = {"command": "python scripts/cpu_generate_calls.py " + " ".join(sys.argv[1:]),
              "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "calls": calls}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
