"""What the benchmark watches while ``generate`` runs: GPU busy time (sampled from ``nvidia-smi``) and, on
request, a cProfile of the host.

``nvidia-smi``'s ``utilization.gpu`` is the percentage of each sample period during which at least one kernel
ran on the GPU: the "GPU busy" of a step loop, without a profiler trace. It is coarse (NVML averages over its
own window) but it needs nothing installed and costs nothing on the device.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import shutil
import subprocess


class GpuBusySampler:
    """Samples ``utilization.gpu`` of every visible GPU every ``interval_ms`` between ``start`` and ``stop``."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        if shutil.which("nvidia-smi") is None:
            raise RuntimeError("--gpu-busy needs nvidia-smi, which is not on PATH")
        self._proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits",
             f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict:
        """{"mean_pct": ..., "samples": n, "per_gpu_mean_pct": [...]} over the samples taken."""
        proc, self._proc = self._proc, None
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        return {**parse_utilization(out), "interval_ms": self.interval_ms}


def parse_utilization(text: str) -> dict:
    """nvidia-smi's "index, utilization.gpu" CSV lines -> mean busy % over GPUs (each GPU's mean first), the
    sample count and each GPU's mean; lines that are not two numbers (a truncated last line) are skipped."""
    per_gpu: dict[int, list[float]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].replace(".", "", 1).isdigit():
            per_gpu.setdefault(int(parts[0]), []).append(float(parts[1]))
    means = [sum(v) / len(v) for _, v in sorted(per_gpu.items())]
    return {"mean_pct": sum(means) / len(means) if means else None,
            "samples": sum(len(v) for v in per_gpu.values()), "per_gpu_mean_pct": means}


@contextlib.contextmanager
def host_profile(path: str | None, top: int = 40):
    """cProfile the block and write the ``top`` functions by own time to ``path`` (no-op when None)."""
    if not path:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
        with open(path, "w") as f:
            f.write(buf.getvalue())
