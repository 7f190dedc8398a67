"""Helpers for tests that run private server processes (a TLS Redis, a RabbitMQ node with
its own users): ports, log tails, finding the server binary, stopping by PID, telling
whether a process is gone."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    """Exited (a zombie awaiting a reaper counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"({path}: {exc})"


def stop(proc: subprocess.Popen[bytes], *, group: bool = False, timeout: float = 30.0) -> None:
    """SIGTERM (to the process group we created, when ``group``), then SIGKILL."""
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait(10)


def rabbitmq_server() -> str:
    """The rabbitmq-server script that runs a node as the calling user."""
    # Debian's /usr/sbin/rabbitmq-server re-runs itself as the rabbitmq user when started as
    # root; the script it wraps runs the node as the calling user.
    for candidate in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("rabbitmq-server is not installed: run `make services` (it installs it)")


def rabbitmq_node_env(home: Path, name: str, epmd_port: int, dist_port: int) -> dict[str, str]:
    """Environment of a private RabbitMQ node whose files all live under ``home``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # its own Erlang cookie
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(home / "plugins-expand"),
    }
