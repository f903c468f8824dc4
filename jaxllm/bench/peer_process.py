"""The HF transformers peers run in a subprocess (torch and JAX must not share the process and its GPU memory):
``run_peer_process`` starts one of the peer modules on the workload and returns the JSON it writes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile

from jaxllm.bench.workloads import Workload


def run_peer_process(module: str, w: Workload, args, model_dir: str, *extra: str) -> dict:
    """``python -m module`` with the peer flags every peer takes (model, workload, device, dtype, and the
    optional request cap and torch thread count from ``args``) plus ``extra``; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [sys.executable, "-m", module, "--model-dir", model_dir, "--workload-json",
           json.dumps(dataclasses.asdict(w)), "--output", out_path, "--device", args.peer_device,
           "--dtype", args.dtype, *extra]
    if args.peer_max_requests:
        cmd += ["--max-requests", str(args.peer_max_requests)]
    if args.peer_threads:
        cmd += ["--threads", str(args.peer_threads)]
    subprocess.run(cmd, check=True)
    with open(out_path) as f:
        return json.load(f)
