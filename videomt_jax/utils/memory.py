"""How much memory the machine can still give: the one answer behind every pre-flight check
(`segment --chunk`, `eval --batch-size`, the train step's XLA memory analysis)."""

from __future__ import annotations

import os
from typing import Any

GIB = 2**30
MEMINFO = "/proc/meminfo"  # Linux: the host's available RAM (MemAvailable), what a CPU "device" can use
HOST_RAM = "RAM available on this host"


def host_available_bytes() -> int | None:
    """The host's available RAM: MemAvailable of /proc/meminfo (Linux), else the free physical
    pages, else None (the machine does not say)."""
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory(device: Any, *, free: bool = False) -> tuple[int | None, str]:
    """(bytes, what they are) of a JAX device: an accelerator's allocator limit
    (`memory_stats()["bytes_limit"]`; with `free`, less what is in use), for a CPU device (or an
    accelerator that does not say) the host's available RAM; None when nothing says."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        limit = int(stats["bytes_limit"]) - (int(stats.get("bytes_in_use", 0)) if free else 0)
        return limit, f"{device.device_kind} ({device.platform}) {'free ' if free else ''}memory"
    return host_available_bytes(), HOST_RAM
