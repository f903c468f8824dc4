"""Where the host time of a decode step goes on the GPU: the time spent *inside* the calls that launch the
forward and sampler programs (XLA runs their thunks, i.e. launches every kernel, on the calling thread) vs
the rest of the host work, for the model dims of a workload, under the current XLA_FLAGS.

    XLA_FLAGS=--xla_gpu_enable_command_buffer= python3 scripts/dispatch_probe.py --workload B1 --output x.json

Prints one JSON line: launch ms per step (forward, sampler), host ms/step, ms/step, the kernel-ish op
count of the decode forward's optimized HLO, and the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="B1")
    p.add_argument("--num-seqs", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="TP over N local GPUs: XLA launches every device's kernels, so launch cost grows with N")
    p.add_argument("--output")
    args = p.parse_args()
    from jaxllm import LLM, SamplingParams
    from jaxllm.bench.workloads import WORKLOADS
    from jaxllm.runner.programs import ForwardKey

    hf = WORKLOADS[args.workload].hf_config()
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf, f)
    t0 = time.perf_counter()
    llm = LLM(d, load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", max_model_len=2048,
              max_num_seqs=args.num_seqs, max_num_batched_tokens=8192, enforce_eager=True,
              tensor_parallel_size=args.tensor_parallel_size,
              # the timed run repeats the prompts: with prefix caching its prefill steps would be shorter, need
              # buckets the first run never compiled, and compile inside the timing (seen at TP=2: 88 ms/step)
              enable_prefix_caching=False)
    runner = llm.llm_engine.runner
    launch = {"forward": 0.0, "sample": 0.0}
    hlo_ops = {}
    get = runner.programs.get

    def timed_get(key):
        fn = get(key)
        kind = "forward" if isinstance(key, ForwardKey) else "sample"

        def call(*a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            launch[kind] += time.perf_counter() - t
            return r
        if kind == "forward" and key.bucket.num_tokens == args.num_seqs and key not in hlo_ops:
            text = fn.as_text()
            hlo_ops[key] = {op: len(re.findall(rf"= \S+ {op}\(", text)) for op in ("fusion", "custom-call", "while",
                                                                                    "conditional", "call")}
        return call

    runner.programs.get = timed_get
    rng = np.random.default_rng(0)
    prompts = [{"prompt_token_ids": rng.integers(0, hf["vocab_size"], args.prompt_len).tolist()}
               for _ in range(args.num_seqs)]
    params = SamplingParams(temperature=0.6, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False)
    llm.generate(prompts, params, use_tqdm=False)  # compiles what the run needs
    startup = time.perf_counter() - t0
    for k in launch:
        launch[k] = 0.0
    s0, w0 = runner.num_steps, runner.device_wait_seconds
    t = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t
    steps = runner.num_steps - s0
    wait = runner.device_wait_seconds - w0
    res = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "workload": args.workload, "steps": steps,
           "tensor_parallel_size": args.tensor_parallel_size,
           "ms_per_step": 1e3 * wall / steps, "host_ms_per_step": 1e3 * (wall - wait) / steps,
           "forward_launch_ms": 1e3 * launch["forward"] / steps, "sample_launch_ms": 1e3 * launch["sample"] / steps,
           "decode_forward_hlo_ops": next(iter(hlo_ops.values()), None), "startup_s": startup}
    print(json.dumps(res))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
