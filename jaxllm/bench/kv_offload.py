"""Bench options of the KV cache's host tier (docs/kv_offload.md): swap_space, preemption_mode, the host
prefix cache, a fixed device cache size (to force preemption or eviction), and a shared-prefix request mix.

``--shared-prefix LEN GROUPS``: request i's prompt is prefix ``i % GROUPS`` (LEN random tokens) followed by its
own prompt. Round-robin order makes each group's next request come after every other group's, so once the
prefixes outgrow the device cache, the device prefix cache (LRU) never hits and the host tier decides.
"""

from __future__ import annotations

import numpy as np


def add_args(p) -> None:
    p.add_argument("--swap-space", type=float, default=0, help="GiB of host memory for KV blocks (swap_space)")
    p.add_argument("--preemption-mode", choices=["recompute", "swap"],
                   help="force one preemption mode (default: the cost rule's choice)")
    p.add_argument("--host-prefix-cache", action="store_true", help="evicted prefix blocks go to the host tier")
    p.add_argument("--num-gpu-blocks-override", type=int, help="the device KV cache's size in blocks")
    p.add_argument("--shared-prefix", type=int, nargs=2, metavar=("LEN", "GROUPS"),
                   help="prefix every prompt with one of GROUPS shared prefixes of LEN tokens (round-robin)")


def llm_kwargs(args) -> dict:
    return {"swap_space": args.swap_space, "preemption_mode": args.preemption_mode,
            "host_prefix_cache": args.host_prefix_cache, "num_gpu_blocks_override": args.num_gpu_blocks_override}


def with_shared_prefixes(prompts: list[list[int]], args, vocab_size: int, seed: int) -> list[list[int]]:
    if not args.shared_prefix:
        return prompts
    length, groups = args.shared_prefix
    rng = np.random.default_rng(seed + 1)
    prefixes = [rng.integers(0, vocab_size, length).tolist() for _ in range(groups)]
    return [prefixes[i % groups] + p for i, p in enumerate(prompts)]


def stats(llm) -> dict:
    st = llm.llm_engine.stats
    return {"swap_space": llm.engine_args.swap_space, "num_swap_preemptions": st.num_swap_preemptions,
            "swapped_out_blocks": st.num_swapped_out_blocks, "swapped_in_blocks": st.num_swapped_in_blocks,
            "host_prefix_cache_hits": st.num_host_prefix_cache_hits,
            "prefix_cache_hit_tokens": sum(e.scheduler.prefix_cache_hits  # every replica's, with data_parallel_size
                                           for e in getattr(llm.llm_engine, "engines", [llm.llm_engine]))}
