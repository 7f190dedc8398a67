"""Worker processes this benchmark starts (and stops, by PID), and CPU accounting.

Peers' workers fork children (Celery's prefork pool, Dramatiq's and taskiq's worker
processes), so a worker's CPU is the sum over it and its descendants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.parent_death import guarded
from sasfleet.tools.cpu import broker_pids, cpu_seconds

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Worker:
    """One worker process tree started by this benchmark."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False
    members: list[tuple[int, int]] = field(default_factory=list)  # (pid, start time)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], env: dict[str, str], workdir: Path) -> Worker:
    """Start ``cmd`` from the repository root (so that ``bench`` imports), its
    output in ``workdir/<name>.log``, in a session of its own (a Ctrl-C meant for the
    benchmark must not reach it before we stop it in order), and told to stop when this
    process dies."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            guarded(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    return Worker(name, proc, log_path)


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot (0 if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def terminate(worker: Worker) -> None:
    """SIGTERM the worker's root once (each library then stops its own children); the
    tree is recorded first so that leftovers can be killed by PID afterwards."""
    if worker.terminated:
        return
    worker.members = [(p, _start_time(p)) for p in tree(worker.pid)]
    worker.terminated = True
    if worker.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)


def stop(worker: Worker, timeout_s: float = 20.0) -> None:
    """Terminate, wait, and SIGKILL whatever of the recorded tree is still there after
    ``timeout_s``."""
    terminate(worker)
    try:
        worker.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)
    for pid, started in worker.members[1:]:
        # Only the descendants recorded above (same pid *and* start time, so never a
        # process that reused the pid): processes this benchmark started.
        if started and _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def stop_all(workers: list[Worker]) -> None:
    """Ask every worker to stop at once, then wait for each."""
    for w in workers:
        terminate(w)
    for w in workers:
        stop(w)


def listening_pids(port: int) -> list[int]:
    """Processes with a TCP socket listening on ``port`` (any local address)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not inodes:
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
    return found


def server_pids(amqp_url: str, redis_url: str) -> dict[str, list[int]]:
    """The RabbitMQ and Redis processes this run talks to. ``broker_pids()`` finds every
    Erlang VM and redis-server on the machine, and tests running beside the benchmark
    start private ones; so keep those listening on the URLs' ports (all of them when none
    can be told apart, e.g. without the rights to read their sockets)."""
    everything = broker_pids()
    ports = {"rabbitmq": urlsplit(amqp_url).port or 5672, "redis": urlsplit(redis_url).port or 6379}
    chosen = {}
    for kind, pids in everything.items():
        listening = set(listening_pids(ports[kind]))
        chosen[kind] = [p for p in pids if p in listening] or pids
    return chosen


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group of processes."""
    return {kind: sum(cpu_seconds(p) for p in pids) for kind, pids in groups.items()}


def cpu_delta(before: dict[str, float], groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds each group used since ``before``."""
    after = cpu_snapshot(groups)
    return {kind: max(0.0, after[kind] - before.get(kind, 0.0)) for kind in after}
