"""What the top of a comparison prints: the exact command, the machine, the servers' and
libraries' versions, and which SAS Fleet code the services run."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime

from rich.console import Console

from bench.model import Phase, RunSpec
from bench.procs import REPO_ROOT
from bench.rabbit import server_versions

LIBRARIES = (
    "sasfleet",
    "celery",
    "kombu",
    "dramatiq",
    "pika",
    "taskiq",
    "taskiq-aio-pika",
    "taskiq-redis",
    "aio-pika",
    "redis",
)


def versions() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def print_header(
    console: Console, base: RunSpec, rounds: int, phases: list[Phase], revision: str
) -> None:
    """The exact command, machine, versions and sizing."""
    servers = asyncio.run(server_versions(base.amqp_url, base.redis_url))
    command = " ".join(["python -m bench.compare", shlex.join(sys.argv[1:])]).rstrip()
    console.print(f"[bold]{command}[/bold]")
    console.print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores, load average {loadavg()}\n"
        f"RabbitMQ {servers['RabbitMQ']}, Redis {servers['Redis']}; {versions()}\n"
        f"SAS Fleet code: {revision}\n"
        f"{base.jobs:,} jobs per run, {rounds} round(s), phases {', '.join(phases)}; "
        f"worker logs in {base.workdir}"
    )


def sasfleet_revision() -> str:
    """The commit the SAS Fleet services run from; with uncommitted changes to their code,
    a digest of those too, so that a change made while the benchmark runs shows."""
    code = ["--", "api", "scheduler", "agent", "supervisor", "shared", "cli", "tools", "examples"]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", *code)
        if dirty:
            digest = hashlib.sha1((dirty + git("diff", "HEAD", *code)).encode()).hexdigest()
            head += f" + uncommitted changes {digest[:7]}"
    except OSError:
        return "unknown (no git)"
    return head


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
