"""Load time of one model from safetensors and from the Orbax checkpoint `jaxllm convert` writes, plus the time of
the conversion itself. Random bf16 bytes of the real shapes (names and shapes from transformers' model on the meta
device) are written as a sharded HF checkpoint first.

    python scripts/bench_load.py --config llama-3.1-8b --workdir /tmp/load --output load.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np

SHARD_BYTES = 4 << 30


def write_random_checkpoint(hf: dict, folder: str) -> int:
    """A HF safetensors checkpoint of random bf16 bytes for config ``hf``; returns its size in bytes."""
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
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    shard, shard_bytes, index, total, n = {}, 0, {}, 0, 0

    def flush():
        nonlocal shard, shard_bytes, n
        if shard:
            name = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
            index.update({k: name for k in shard})
            shard, shard_bytes, n = {}, 0, n + 1

    for key, shape in shapes.items():
        bits = rng.integers(0, 2**16, size=shape, dtype=np.uint16) & 0xBFFF  # finite bf16 values
        arr = bits.view(ml_dtypes.bfloat16)
        shard[key] = arr
        shard_bytes += arr.nbytes
        total += arr.nbytes
        if shard_bytes >= SHARD_BYTES:
            flush()
    flush()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": index}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf, f)
    return total


def timed_load(path: str, **kwargs) -> float:
    import jax

    import jaxllm

    t0 = time.perf_counter()
    model = jaxllm.load_model(path, **kwargs)
    jax.block_until_ready(jax.tree_util.tree_leaves(model))
    seconds = time.perf_counter() - t0
    del model
    return seconds


def main() -> None:
    from jaxllm.bench.workloads import CONFIG_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="llama-3.1-8b", help="a config of jaxllm/bench/configs (name or path)")
    p.add_argument("--workdir", default="/tmp/jaxllm-load")
    p.add_argument("--repeats", type=int, default=2, help="loads of each format (the first reads a cold cache)")
    p.add_argument("--output")
    args = p.parse_args()
    cfg_path = args.config if os.path.isfile(args.config) else os.path.join(CONFIG_DIR, args.config + ".json")
    with open(cfg_path) as f:
        hf = json.load(f)
    shutil.rmtree(args.workdir, ignore_errors=True)
    st_dir, orbax_dir = os.path.join(args.workdir, "hf"), os.path.join(args.workdir, "orbax")
    t0 = time.perf_counter()
    size = write_random_checkpoint(hf, st_dir)
    write_s = time.perf_counter() - t0
    from jaxllm.convert import convert_checkpoint

    convert_s = convert_checkpoint(st_dir, orbax_dir)
    result = {"config": os.path.basename(cfg_path), "checkpoint_bytes": size, "write_safetensors_s": write_s,
              "convert_s": convert_s, "safetensors_load_s": [], "orbax_load_s": []}
    for _ in range(args.repeats):
        result["safetensors_load_s"].append(timed_load(st_dir))
        result["orbax_load_s"].append(timed_load(orbax_dir))
    import jax

    result["device"] = jax.devices()[0].device_kind
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
