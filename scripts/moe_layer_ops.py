"""Per-layer XLA ops and CPU cost analysis of one MoE layer at Qwen3-30B-A3B's dimensions (tests/moe_lowering.py
says why they matter), at a prefill-sized and a decode-sized step. Runs on the CPU, no GPU needed.

    python scripts/moe_layer_ops.py [--tokens 8192 256] [--cost]     # --cost: also compile on the CPU (~1 min)
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from moe_lowering import QWEN3_30B_A3B, layer_cost, layer_ops

SHOWN = ("reduce_window", "pad", "scatter", "gather", "sort", "while", "custom_call", "reduce", "dynamic_slice",
         "concatenate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 256])
    parser.add_argument("--cost", action="store_true", help="also XLA's CPU cost analysis (bytes accessed)")
    args = parser.parse_args()
    dims = QWEN3_30B_A3B
    for tokens in args.tokens:
        counts, _ = layer_ops(tokens, **dims)
        m = tokens * dims["k"]
        total = sum(n for name, n in counts.items() if not name.endswith("]"))
        shown = ", ".join(f"{name}={counts.get('stablehlo.' + name, 0)}" for name in SHOWN)
        print(f"T={tokens} (M={m}): {total} StableHLO ops; {shown}")
        windows = {name.split("[")[1][:-1]: n for name, n in counts.items() if name.endswith("]")}
        if windows:
            print(f"  reduce_window (a cumsum) length: count {windows}")
        if args.cost:
            cost = layer_cost(tokens, **dims)
            print(f"  CPU cost analysis: bytes accessed {cost.get('bytes accessed', 0) / 1e6:.1f} MB, "
                  f"flops {cost.get('flops', 0) / 1e9:.2f} G, {cost['top-level ops']} top-level ops")


if __name__ == "__main__":
    main()
