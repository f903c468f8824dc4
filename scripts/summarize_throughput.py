"""Collect the committed throughput runs (benchmarks/throughput_h200_*.json) into benchmarks/throughput_h200.json
and a Markdown table (benchmarks/throughput_h200.md), with the peer figures of ../shared/BENCHMARKS.md.

    python scripts/summarize_throughput.py
"""

from __future__ import annotations

import glob
import json
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")
# HF transformers 5.17 generate_batch on the same H200 (../shared/BENCHMARKS.md); not re-measured in our runs.
PEER_OUTPUT_TOK_S = {"B1-peer": 820, "B2-like (256 requests)": 580}
RUN_NOTES = {
    "B1_run1": "commit 34a9565: first engine run",
    "B1_run2": "commit 1221f70: flat parameter leaves + list-based step inputs (host path)",
    "B2_run1": "commit 34a9565: first engine run",
}


def main() -> None:
    runs = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "throughput_h200_*_run*.json"))):
        name = os.path.basename(path)[len("throughput_h200_"):-len(".json")]
        runs[name] = json.load(open(path))
    rows = ["| run | workload | output tok/s | total tok/s | % roofline (output) | generate s | start-up s "
            "(compile s) | ms/step (host ms/step) | peak GiB | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        o = r["jaxllm"]
        rows.append(f"| {name} | {r['workload']['name']} | {o['output_tok_s']:,.0f} | {o['total_tok_s']:,.0f} | "
                    f"{r['pct_roofline_output']:.1f}% of {r['roofline']['output_tok_s']:,.0f} | "
                    f"{o['generate_s']:.1f} | {o['startup_s']:.0f} ({o['compile_s']:.0f}) | "
                    f"{o['ms_per_step']:.1f} ({o['host_ms_per_step']:.1f}) | {o['peak_device_bytes'] / 2**30:.0f} | "
                    f"{RUN_NOTES.get(name, '')} |")
    md = ["# Throughput on one H200 (random bf16 weights, random prompts, ignore_eos)", "",
          "Command (per run, on the GPU machine): `python3 -m jaxllm.bench --workload B1|B2 --output ...` "
          "(through `scripts/gpu_throughput.sh`). Defaults: max_num_seqs 256, max_num_batched_tokens 8192, "
          "block 16, gpu_memory_utilization 0.9. Roofline: ../shared/BENCHMARKS.md's method, computed by the script.",
          "", *rows, "",
          "HF transformers peer (same GPU, from ../shared/BENCHMARKS.md, not re-run here for lack of device time): "
          "B1-peer 820 output tok/s; Llama-3.1-8B dims with 256 requests 580 output tok/s."]
    with open(os.path.join(ROOT, "benchmarks", "throughput_h200.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(ROOT, "benchmarks", "throughput_h200.json"), "w") as f:
        json.dump({"runs": runs, "peer_output_tok_s_from_BENCHMARKS_md": PEER_OUTPUT_TOK_S, "notes": RUN_NOTES},
                  f, indent=2)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
