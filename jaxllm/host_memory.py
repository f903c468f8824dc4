"""Host memory available to the process, for the ``swap_space`` check (no dependency: /proc/meminfo, else
``os.sysconf``)."""

from __future__ import annotations

import os


def available_host_bytes() -> int | None:
    """MemAvailable (what can be allocated without swapping), else the free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
