"""Why fp8 W8A8 start-up is slow: compile time (mostly XLA's GEMM autotuning) and run time of the W8A8 GEMM
(per-token e4m3 activations x K-minor e4m3 weight, ``bench_quant_matmul``'s "fp8_w8a8_nk") for the Llama-8B
gate_up / down shapes, under the current XLA_FLAGS. Prints one JSON line per case; run it once per flag set
(scripts/gpu_fp8_startup.sh) and compare: a flag set that compiles fast and picks an equally fast GEMM is what
the engine can use for W8A8 programs.

    XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python3 scripts/fp8_compile_probe.py --m 256 2048
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quant_matmul import SHAPES, gemm_kinds, make_weights, op
from bench_timing import timeit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, nargs="+", default=[256, 2048])
    ap.add_argument("--label", default=os.environ.get("XLA_FLAGS", "") or "default")
    args = ap.parse_args()
    fn = jax.jit(op("fp8_w8a8_nk"))
    key = jax.random.key(0)
    for name, (k, n) in SHAPES.items():
        (w, s), = make_weights("fp8", k, n, 1, key)
        weight = (jnp.asarray(w.T), s)
        for m in args.m:
            x = jax.random.normal(jax.random.fold_in(key, m), (m, k), jnp.float32).astype(jnp.bfloat16)
            t0 = time.perf_counter()
            compiled = fn.lower(x, weight).compile()
            compile_s = time.perf_counter() - t0
            us = 1e6 * timeit(compiled, [(x, weight)], rounds=10)[0]
            print(json.dumps({"label": args.label, "shape": name, "M": m, "compile_s": round(compile_s, 2),
                              "us": round(us, 1),
                              "gemm": gemm_kinds(compiled.as_text())}), flush=True)


if __name__ == "__main__":
    main()
