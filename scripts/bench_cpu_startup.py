"""Start-up of ``LLM(model=jaxllm.DEFAULT_MODEL)`` on the CPU, cold and warm, each in a fresh process.

    python scripts/bench_cpu_startup.py --repeats 3 --output benchmarks/cpu_startup.json

Cold: an empty JAX compilation cache and an empty dequantized-GGUF cache (a new machine). Warm: both caches
filled by the cold run before it. "ready" is from the start of the process (``import jaxllm`` included) to
``LLM(...)`` returning; "first generate" is the greedy 16-token completion of one short prompt that follows
(the programs still compiling in the background run alongside it); "ready_cpu" is the CPU time the process used
until ready (all its threads), which other processes on a shared machine change much less than the wall time.
Medians over ``--repeats`` pairs; the machine's 1-minute load average is recorded with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import jaxllm
from jaxllm import LLM, SamplingParams
llm = LLM(model=jaxllm.DEFAULT_MODEL)
ready = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
runner = llm.llm_engine.runner
t1 = time.perf_counter()
out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
first = time.perf_counter() - t1
print(json.dumps({"ready_s": ready, "ready_cpu_s": usage.ru_utime + usage.ru_stime, "first_generate_s": first,
                  "weights_s": llm.load_seconds,
                  "compile_s": runner.compile_seconds, "first_run_s": runner.first_run_seconds,
                  "startup_programs": len(runner.startup_keys()), "text": out[0].outputs[0].text}))
"""


def run_once(cache_root: str) -> dict:
    env = {**os.environ, "JAXLLM_CACHE_DIR": os.path.join(cache_root, "xla"),
           "JAXLLM_GGUF_CACHE_DIR": os.path.join(cache_root, "gguf")}
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg_1min_before": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output")
    args = p.parse_args()
    runs = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            runs["cold"].append(run_once(root))
            runs["warm"].append(run_once(root))
    result = {"command": "python scripts/bench_cpu_startup.py " + " ".join(sys.argv[1:]),
              "cpu_count": os.cpu_count(), "runs": runs}
    for kind, rs in runs.items():
        result[f"{kind}_ready_s_median"] = statistics.median(r["ready_s"] for r in rs)
        result[f"{kind}_first_generate_s_median"] = statistics.median(r["first_generate_s"] for r in rs)
        result[f"{kind}_ready_cpu_s_median"] = statistics.median(r["ready_cpu_s"] for r in rs)
        print(f"{kind}: ready {result[f'{kind}_ready_s_median']:.1f} s ({result[f'{kind}_ready_cpu_s_median']:.1f} "
              f"CPU-s), first generate "
              f"{result[f'{kind}_first_generate_s_median']:.1f} s (median of {len(rs)}; loads "
              f"{[round(r['load_avg_1min_before'], 1) for r in rs]})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
