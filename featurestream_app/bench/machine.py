"""What machine a benchmark ran on (written next to every result)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["describe_machine"]


def describe_machine() -> dict[str, Any]:
    """CPU model, core count, memory, Python and OS, and when."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
