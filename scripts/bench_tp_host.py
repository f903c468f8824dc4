"""Host time per engine step under tensor parallelism, on fake CPU devices (or any backend).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
        python scripts/bench_tp_host.py --tp 1 4 --max-num-seqs 64 256 --output benchmarks/tp_host_cpu.json

A tiny Llama (random weights) decodes ``--num-requests`` requests at each (TP, max_num_seqs): one warm-up
``generate`` compiles the programs it needs (``enforce_eager``), a second one is timed. Each step's host time is
split into the calls of compiled programs (the C++ dispatch; on CPU it also runs the program), Python-side
``jax.device_put`` calls (host -> device input transfers) and the rest of the engine and runner (scheduling,
packing, output processing). The part that grows with the device count is what a GPU run pays per step on the
host (docs/performance.md, tensor parallelism).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax

from jaxllm import LLM, SamplingParams
from jaxllm.runner.programs import ForwardKey

TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
              "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
              "tie_word_embeddings": False}


class _Timers:
    """Seconds spent in calls of the forward and sampler programs and in ``jax.device_put``, and how many of
    each."""

    def __init__(self):
        self.seconds = {"forward_calls": 0.0, "sampler_calls": 0.0, "device_put": 0.0}
        self.counts = dict.fromkeys(self.seconds, 0)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.counts[name] += 1
        return timed


def _run(model_dir: str, tp: int, max_num_seqs: int, num_requests: int, output_len: int, repeats: int) -> dict:
    llm = LLM(model_dir, load_format="dummy", skip_tokenizer_init=True, tensor_parallel_size=tp,
              max_num_seqs=max_num_seqs, max_num_batched_tokens=max(512, max_num_seqs), max_model_len=128,
              enforce_eager=True, seed=0)
    runner = llm.llm_engine.runner
    prompts = [{"prompt_token_ids": [(7 * i + j) % 500 + 3 for j in range(16)]} for i in range(num_requests)]
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True, detokenize=False)
    llm.generate(prompts, params, use_tqdm=False)  # compiles every program the timed runs use
    timers = _Timers()
    get, put = runner.programs.get, jax.device_put
    runner.programs.get = lambda key: timers.wrap(
        "forward_calls" if isinstance(key, ForwardKey) else "sampler_calls", get(key))
    jax.device_put = timers.wrap("device_put", put)
    per_step, steps_total = [], 0
    try:
        for _ in range(repeats):
            steps0, wait0, t0 = runner.num_steps, runner.device_wait_seconds, time.perf_counter()
            llm.generate(prompts, params, use_tqdm=False)
            wall, steps = time.perf_counter() - t0, runner.num_steps - steps0
            steps_total += steps
            per_step.append((wall / steps, (wall - (runner.device_wait_seconds - wait0)) / steps))
    finally:
        runner.programs.get, jax.device_put = get, put
    return {"tensor_parallel_size": tp, "max_num_seqs": max_num_seqs, "steps_per_generate": steps,
            "ms_per_step": 1e3 * statistics.median(p[0] for p in per_step),
            "host_ms_per_step": 1e3 * statistics.median(p[1] for p in per_step),
            **{f"{k}_ms_per_step": 1e3 * v / steps_total for k, v in timers.seconds.items()},
            **{f"{k}_per_step": v / steps_total for k, v in timers.counts.items()}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tp", type=int, nargs="+", default=[1, 4])
    p.add_argument("--max-num-seqs", type=int, nargs="+", default=[64, 256])
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed generate calls per configuration (median)")
    p.add_argument("--output", help="write the results as JSON here")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as model_dir:
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(TINY_LLAMA, f)
        for n in args.max_num_seqs:
            for tp in args.tp:
                row = _run(model_dir, tp, n, n, args.output_len, args.repeats)
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                      flush=True)
    if args.output:
        result = {"command": " ".join(["python", *sys.argv]), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "device": str(jax.devices()[0].platform), "host": platform.processor() or platform.machine(),
                  "model": TINY_LLAMA, "output_len": args.output_len, "results": rows}
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
