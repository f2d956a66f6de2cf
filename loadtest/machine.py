"""Names the host a measurement ran on, so published figures say which machine they describe."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe_machine() -> dict[str, object]:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 1,
        "cpu": cpu_model(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def machine_line(machine: dict[str, object]) -> str:
    return (
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB,"
        f" {machine['os']}, Python {machine['python']}, load average {machine['load_average']}"
    )
