"""Load time of one model from safetensors and from the Orbax checkpoint `jaxllm convert` writes, plus the time of
the conversion itself. A random bf16 checkpoint of the real shapes (load_rss_probe.write_checkpoint) is written
first.

    python scripts/bench_load.py --config llama-3.1-8b --workdir /tmp/load --output load.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from load_rss_probe import write_checkpoint  # scripts/: the random checkpoint of real shapes


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
    size = write_checkpoint(hf, st_dir)
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
