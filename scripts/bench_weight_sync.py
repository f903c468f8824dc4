"""The JAX-native weight path at real dims: ``LLM.update_weights`` (device to device, same shardings and dtypes,
and from float16 arrays that must be cast), ``sleep`` / ``wake_up`` at both levels with the device memory each
returns, and the number of compiled programs before and after (an update must compile nothing).

    python scripts/bench_weight_sync.py --config llama-3.1-8b --output weight_sync.json

Weights are random (load_format="dummy"); the new weights are computed on the device from the served ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def _timed(fn, arg, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        out.append(time.perf_counter() - t0)
    return out


def _bytes_in_use() -> int:
    import jax

    return sum((d.memory_stats() or {}).get("bytes_in_use", 0) for d in jax.local_devices())


def _bytes_free() -> int:
    """What the first device's allocator can still hand out (its limit less what is in use)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)


def main() -> None:
    from jaxllm.bench.workloads import CONFIG_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="llama-3.1-8b", help="a config of jaxllm/bench/configs (name or path)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="JAX's allocator cap as a fraction of the device (it must hold the served weights plus a "
                        "new tree and, for the cast case, its converted copy)")
    p.add_argument("--kv-cache-gib", type=float, default=2.0,
                   help="the KV cache's size (kv_cache_memory_bytes), small so the extra trees fit beside it")
    p.add_argument("--output")
    args = p.parse_args()
    import jax
    import jax.numpy as jnp

    from jaxllm import LLM, SamplingParams

    cfg_path = args.config if os.path.isfile(args.config) else os.path.join(CONFIG_DIR, args.config + ".json")
    model_dir = tempfile.mkdtemp(prefix="jaxllm-weights-")
    with open(cfg_path) as f, open(os.path.join(model_dir, "config.json"), "w") as g:
        g.write(f.read())
    t0 = time.perf_counter()
    llm = LLM(model_dir, load_format="dummy", skip_tokenizer_init=True, dtype="bfloat16", max_model_len=1024,
              max_num_seqs=16, gpu_memory_utilization=args.gpu_memory_utilization, enable_sleep_mode=True,
              kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30))
    startup = time.perf_counter() - t0
    prompts = [{"prompt_token_ids": [(7 * i + j) % 1000 + 1 for j in range(64)]} for i in range(8)]
    greedy = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, detokenize=False)

    def generate():
        return [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]

    before = generate()
    runner = llm.llm_engine.runner
    compiled_before = runner.num_compilations
    served = llm.get_weights()
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(served))

    def update(tree):
        llm.update_weights(tree)
        jax.block_until_ready(llm.get_weights())

    # One new tree at a time beside the served one (the served arrays, the new tree and, during a cast, its
    # converted copy: three weight-sized trees at the peak). The cast case runs only where the allocator has room
    # for two more trees beside what the engine holds (not 8B dims on an 80 GB card).
    cast_s = None
    if _bytes_free() > 2.2 * nbytes:
        other_dtype = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float16 if x.dtype == jnp.bfloat16 else jnp.float32), served)  # a trainer's copy
        jax.block_until_ready(other_dtype)
        cast_s = _timed(update, other_dtype, args.repeats)
        del other_dtype
    del served
    scaled = jax.tree_util.tree_map(lambda x: (x * 1.01).astype(x.dtype), llm.get_weights())  # same layout
    jax.block_until_ready(scaled)
    same_layout_s = _timed(update, scaled, args.repeats)  # served last: the outputs must change
    del scaled
    after = generate()
    compiled_after = runner.num_compilations

    result = {"config": os.path.basename(cfg_path), "weights_bytes": nbytes, "startup_s": startup,
              "update_weights_same_layout_s": same_layout_s, "update_weights_from_other_dtype_s": cast_s,
              "outputs_changed_by_update": before != after,
              "compiled_programs_before_update": compiled_before, "compiled_programs_after_update": compiled_after}
    for level in (1, 2):
        in_use = _bytes_in_use()
        t0 = time.perf_counter()
        llm.sleep(level=level)
        sleep_s = time.perf_counter() - t0
        asleep = _bytes_in_use()
        t0 = time.perf_counter()
        llm.wake_up()
        jax.block_until_ready(llm.get_weights())
        wake_s = time.perf_counter() - t0
        result[f"sleep_level{level}"] = {"sleep_s": sleep_s, "wake_up_s": wake_s, "bytes_in_use_awake": in_use,
                                         "bytes_in_use_asleep": asleep, "bytes_returned": in_use - asleep}
        result[f"sleep_level{level}"]["generate_after_wake_ok"] = len(generate()) == len(prompts)
    result["device"] = jax.devices()[0].device_kind
    result["median_update_weights_s"] = statistics.median(same_layout_s)
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
