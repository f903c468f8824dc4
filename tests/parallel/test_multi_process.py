"""Multi-controller serving through ``jax.distributed`` on one machine: 2 and 4 CPU processes on localhost
(gloo collectives), tensor parallelism across processes and data parallelism across processes, every process
returning the outputs of one process with one device (greedy, seeded and unseeded requests). Each case takes
5-15 s on 2 cores (the processes compile on first use: enforce_eager)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from hf_models import save_tiny_model

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp-llama")
    save_tiny_model(path, "LlamaForCausalLM")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(checkpoint, tmp_path, num_processes: int, local_devices: int, tp: int, dp: int,
         slurm: bool = False) -> list:
    """Start the processes, wait for them, and return each one's outputs. ``slurm``: the processes get the
    environment ``srun`` gives its tasks, and ``LLM`` initialises ``jax.distributed`` from it."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outs = [tmp_path / f"out{p}-{num_processes}-{tp}-{dp}.json" for p in range(num_processes)]

    def task_env(p):
        if not slurm:
            return env
        return {**env, "SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": str(num_processes),
                "SLURM_PROCID": str(p), "SLURM_LOCALID": "0", "JAX_COORDINATOR_PORT": str(port)}

    procs = [subprocess.Popen([sys.executable, WORKER, checkpoint, str(outs[p]), "launcher" if slurm else str(port),
                               str(num_processes), str(p), str(local_devices), str(tp), str(dp)], env=task_env(p),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in range(num_processes)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    return [json.loads(out.read_text()) for out in outs]


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    return _run(checkpoint, tmp_path_factory.mktemp("ref"), 1, 1, 1, 1)[0]


@pytest.mark.parametrize("num_processes,local_devices,tp,dp", [
    (2, 1, 2, 1),  # TP across processes
    (2, 1, 1, 2),  # DP across processes: one replica per process
    (2, 2, 2, 2),  # DP across processes, TP inside each
    (4, 1, 2, 2),  # each replica's TP spans two processes
])
def test_every_process_returns_one_process_outputs(checkpoint, reference, tmp_path, num_processes, local_devices,
                                                    tp, dp):
    results = _run(checkpoint, tmp_path, num_processes, local_devices, tp, dp)
    assert [r["tokens"] for r in results] == [reference["tokens"]] * num_processes
    # each process drives the replicas on its devices only, and every one of them served requests
    assert [r["local_replicas"] for r in results] == [max(1, dp * tp // (num_processes * local_devices))] * num_processes
    assert all(r["local_steps"] > 0 for r in results)


def test_external_launcher_initializes_jax_distributed(checkpoint, reference, tmp_path):
    """distributed_executor_backend="external_launcher": LLM calls jax.distributed.initialize(), which reads
    the layout from the launcher (here SLURM's task environment); DP across the two processes."""
    results = _run(checkpoint, tmp_path, 2, 1, 1, 2, slurm=True)
    assert [r["tokens"] for r in results] == [reference["tokens"]] * 2
