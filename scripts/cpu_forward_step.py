"""Time one compiled forward program of the default model on the CPU: wall and process CPU time per call.

    python scripts/cpu_forward_step.py [--tokens 8] [--repeats 30]
    XLA_FLAGS=--xla_cpu_use_xnnpack=true python scripts/cpu_forward_step.py   # an XLA CPU option against it

The forward of a ``--tokens`` bucket (8: a decode step of 8 sequences) runs on an all-padding step, as start-up
runs it, so the figure is the forward alone: no scheduler, sampler or host bookkeeping. CPU time / wall time says
how many cores XLA keeps busy (about 1.0: the step's matmuls run on one thread; near the core count: on all).
JAX's compilation cache keys include XLA_FLAGS, so each setting compiles its own programs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    import jax

    import jaxllm
    from jaxllm import LLM
    from jaxllm.runner.programs import ForwardKey

    llm = LLM(model=jaxllm.DEFAULT_MODEL, dtype="float32", max_num_seqs=16, max_num_batched_tokens=256)
    runner = llm.llm_engine.runner
    runner.programs.wait_background()
    keys = [k for k in runner.programs.compiled if isinstance(k, ForwardKey) and k.bucket.num_tokens == args.tokens
            and not k.long_prefill and not k.return_hidden]
    if not keys:
        raise ValueError(f"--tokens {args.tokens} is no bucket of the ladder: {sorted(runner.ladder.buckets)}")
    key = keys[0]
    fn, step = runner.programs.compiled[key], runner._padding_step(key.bucket)

    def run() -> None:
        runner.kv_caches, logits, _, _ = fn(runner.params, runner.kv_caches, step, runner._prev_tokens,
                                            runner._lora_stacks())
        jax.block_until_ready(logits)

    for _ in range(3):
        run()
    walls, cpus = [], []
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(json.dumps({"bucket": str(key.bucket), "xla_flags": os.environ.get("XLA_FLAGS", ""), "wall_ms": wall * 1e3,
                      "cpu_ms": cpu * 1e3, "cpu_per_wall": cpu / wall, "load_avg_1min": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
