"""What the ops' dispatchers need to know about the device (no jaxllm imports, like the rest of ops/)."""

from __future__ import annotations

import jax


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first device if it is an NVIDIA GPU, else None."""
    try:
        dev = jax.devices()[0]
    except RuntimeError:
        return None
    if dev.platform != "gpu":
        return None
    cc = getattr(dev, "compute_capability", None)
    if not cc:
        return None
    major, _, minor = str(cc).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


DEFAULT_NUM_SMS = 132  # H200 / H100 SXM; read from the device when there is one


def num_sms() -> int:
    """Streaming multiprocessors of the first device (the kernels' persistent grids and split-K plans)."""
    try:
        return int(getattr(jax.devices()[0], "core_count", 0) or DEFAULT_NUM_SMS)
    except Exception:  # noqa: BLE001 - no backend at all: keep the default
        return DEFAULT_NUM_SMS
