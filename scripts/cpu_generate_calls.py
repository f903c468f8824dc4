"""Successive ``generate`` calls on the CPU: what the first call in a process pays beyond the later ones.

    python scripts/cpu_generate_calls.py [--calls 3] [--output benchmarks/cpu/generate_calls.json]

``LLM(model=jaxllm.DEFAULT_MODEL, dtype="float32")``, every start-up program compiled (``wait_background``),
then ``--calls`` times the CPU workload's shape (8 prompts of 16..64 random token ids, 32 greedy tokens each,
as ``jaxllm bench --workload CPU``), each call timed as a whole and step by step (``LLMEngine.step``). The
first call's extra time sits in its first steps: the first execution of programs compiled on the background
thread. ``jaxllm bench`` times a first call, as does the transformers peer it is compared with.
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
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 40000) for _ in range(rng.randrange(16, 65))] for _ in range(8)]
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True, detokenize=False)
    engine, calls = llm.llm_engine, []
    for c in range(args.calls):
        for i, ids in enumerate(prompts):
            engine.add_request(f"call{c}-{i}", {"prompt_token_ids": ids}, params)
        steps, t0 = [], time.perf_counter()
        while engine.has_unfinished_requests():
            t = time.perf_counter()
            engine.step()
            steps.append(1e3 * (time.perf_counter() - t))
        wall = time.perf_counter() - t0
        calls.append({"wall_s": wall, "output_tok_s": 8 * 32 / wall, "steps": len(steps),
                      "first_steps_ms": [round(s, 1) for s in steps[:4]],
                      "median_step_ms": sorted(steps)[len(steps) // 2]})
        print(f"call {c}: {wall:.2f} s, {8 * 32 / wall:.0f} output tok/s, first steps {calls[-1]['first_steps_ms']} "
              f"ms, median step {calls[-1]['median_step_ms']:.1f} ms")
    result = {"command": "python scripts/cpu_generate_calls.py " + " ".join(sys.argv[1:]),
              "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "calls": calls}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
