"""CPU seconds of processes from /proc (Linux): ours, RabbitMQ's and Redis'."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def find_pids(name_part: str, cmdline_part: str = "") -> list[int]:
    """Pids whose command name contains ``name_part`` (and command line ``cmdline_part``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if name_part in comm and cmdline_part in cmdline:
            found.append(int(entry.name))
    return found


def broker_pids() -> dict[str, list[int]]:
    """The local RabbitMQ (Erlang VM) and Redis server processes, for CPU accounting."""
    return {
        "rabbitmq": find_pids("beam", "rabbit"),
        "redis": find_pids("redis-server"),
    }
