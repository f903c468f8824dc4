"""Peak host memory while loading a real-size checkpoint: writes random bf16 safetensors of an architecture
(sharded like HF's ~4 GiB files), then loads it with ``LLM(path, tensor_parallel_size=N)`` in a fresh
subprocess per N and reports that process's peak RSS, load time and the checkpoint size.

    python3 scripts/load_rss_probe.py --workload B2 --tp 1 2 --output rss.json   (on the GPU machine)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_checkpoint(hf: dict, path: str, shard_bytes: int = 4 << 30) -> int:
    """Random bf16 tensors with the HF names and shapes of config ``hf`` (any architecture transformers knows:
    its model built on the meta device names them), saved as a sharded checkpoint; returns the total bytes."""
    import ml_dtypes
    import torch
    import transformers
    from safetensors.numpy import save_file

    cfg = transformers.AutoConfig.for_model(**hf)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        shapes.pop("lm_head.weight", None)
    os.makedirs(path, exist_ok=True)
    # one pool of random values, tiled into every tensor: drawing 8B normals one by one took minutes on the GPU
    # host, and the loader's memory does not depend on the values
    pool = (np.random.default_rng(0).standard_normal(1 << 24, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    shard, size, total, files, index = {}, 0, 0, [], {}

    def flush():
        nonlocal shard, size
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
        files.append(name)
        index.update({k: name for k in shard})
        shard, size = {}, 0

    for name, shape in shapes.items():
        a = np.resize(pool, shape)
        shard[name] = a
        size += a.nbytes
        total += a.nbytes
        if size >= shard_bytes:
            flush()
    if shard:
        flush()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": index}, fh)
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(hf, fh)
    return total


def current_rss_bytes() -> int:
    """Resident set size now (VmRSS), not the peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(path: str, tp: int) -> None:
    import jax

    from jaxllm import LLM

    # the runtime before any weight: a context on each of the N devices (CUDA, XLA's client, mapped libraries)
    for d in jax.devices()[:tp]:
        jax.device_put(np.zeros(1, np.float32), d).block_until_ready()
    baseline = current_rss_bytes()
    t = time.perf_counter()
    llm = LLM(path, skip_tokenizer_init=True, tensor_parallel_size=tp, enforce_eager=True, max_model_len=2048,
              dtype="bfloat16")
    load = llm.load_seconds
    total = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    # On a CPU "device" the placed weights live in host memory: the loader's own overhead is peak - placed.
    on_cpu = jax.devices()[0].platform == "cpu"
    on_host = sum(a.nbytes for a in jax.tree_util.tree_leaves(llm.llm_engine.runner.params)) if on_cpu else 0
    print(json.dumps({"tp": tp, "peak_rss_bytes": rss, "runtime_rss_bytes": baseline,
                      "weights_in_host_memory_bytes": on_host, "load_s": load,
                      "construct_s": total, "platform": jax.devices()[0].platform}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="B2")
    p.add_argument("--tp", type=int, nargs="+", default=[1])
    p.add_argument("--layers", type=int, help="keep only this many decoder layers (a smaller checkpoint of the "
                                               "same tensor shapes, e.g. for a CPU run)")
    p.add_argument("--shard-gib", type=float, default=4.0, help="checkpoint file size (HF uses ~4-5 GiB)")
    p.add_argument("--output")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from jaxllm.bench.workloads import WORKLOADS

    hf = WORKLOADS[args.workload].hf_config()
    if args.layers:
        hf["num_hidden_layers"] = args.layers
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as path:
        t = time.perf_counter()
        size = write_checkpoint(hf, path, shard_bytes=int(args.shard_gib * 2**30))
        runs = {"workload": args.workload, "checkpoint_bytes": size, "write_s": time.perf_counter() - t, "runs": []}
        print(f"wrote {size / 2**30:.1f} GiB in {runs['write_s']:.0f} s", flush=True)
        for tp in args.tp:
            out = subprocess.run([sys.executable, __file__, "--child", path, str(tp)], capture_output=True,
                                 text=True, check=False)
            line = [x for x in out.stdout.splitlines() if x.startswith("{")]
            runs["runs"].append(json.loads(line[-1]) if line else {"tp": tp, "error": out.stderr[-2000:]})
            print(runs["runs"][-1], flush=True)
    for r in runs["runs"]:
        if "peak_rss_bytes" in r:
            print(f"TP={r['tp']} ({r['platform']}): peak host RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB for a "
                  f"{size / 2**30:.1f} GiB checkpoint, of which {r['runtime_rss_bytes'] / 2**30:.2f} GiB before "
                  f"loading (runtime) and {r['weights_in_host_memory_bytes'] / 2**30:.2f} GiB the weights "
                  f"themselves when placed in host memory; load {r['load_s']:.1f} s")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(runs, f, indent=2)


if __name__ == "__main__":
    main()
