"""Runs the three services as real OS processes under one prefix (demo, bench, tests).

Each process is the real ``sasfleet ... run`` command; readiness is a ``--ready-file`` the
service touches once it consumes. Processes are stopped by PID, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sasfleet.shared.config import Settings
from sasfleet.shared.runtime import PARENT_PID_ENV

# The example handlers (in the package): what the demo and the benchmark run.
EXAMPLE_TASKS = "sasfleet.examples.tasks"


@dataclass
class ServiceProcess:
    """One running service process."""

    role: str
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_file: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if it did not exit; returns the exit code."""
        self.terminate()
        return self.wait(timeout_s)

    def terminate(self) -> None:
        """Ask the process to drain and exit (SIGCONT first: a stopped one cannot)."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int | None:
        """Wait for the exit; SIGKILL after ``timeout_s``. A second SIGTERM is never sent:
        once a service has removed its handlers it would die of it mid-shutdown."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class LocalFleet:
    """Starts and stops service processes sharing one prefix and environment."""

    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sasfleet-")))
    cwd: Path | None = None
    processes: list[ServiceProcess] = field(default_factory=list)
    _count: int = 0

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "SASFLEET_AMQP_URL": s.amqp_url.get_secret_value(),
                "SASFLEET_REDIS_URL": s.redis_url.get_secret_value(),
                "SASFLEET_PREFIX": s.prefix,
                "PYTHONUNBUFFERED": "1",
                # Stop when this process dies, even of SIGKILL: no orphaned services.
                PARENT_PID_ENV: str(os.getpid()),
            }
        )
        env.update(self.env)
        return env

    def start(
        self, role: str, *args: str, wait: bool = True, timeout_s: float = 60.0
    ) -> ServiceProcess:
        """Start ``sasfleet ROLE run ARGS...``; wait until it consumes unless ``wait`` is False."""
        self._count += 1
        name = f"{role}-{self._count}"
        ready = self.workdir / f"{name}.ready"
        log_path = self.workdir / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "sasfleet.cli",
            role,
            "run",
            *args,
            "--ready-file",
            str(ready),
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.cwd,
                start_new_session=True,
            )
        service = ServiceProcess(role, name, proc, log_path, ready)
        self.processes.append(service)
        if wait:
            self.wait_ready(service, timeout_s)
        return service

    def wait_ready(self, service: ServiceProcess, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not service.ready_file.exists():
            if not service.alive():
                raise RuntimeError(
                    f"{service.name} exited with {service.proc.returncode}:\n"
                    f"{service.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{service.name} not ready after {timeout_s}s:\n{service.log()[-4000:]}"
                )
            time.sleep(0.05)

    def scheduler(self, *args: str, wait: bool = True) -> ServiceProcess:
        return self.start("scheduler", *args, wait=wait)

    def supervisor(self, *args: str, wait: bool = True) -> ServiceProcess:
        return self.start("supervisor", *args, wait=wait)

    def agent(
        self, module: str = EXAMPLE_TASKS, *args: str, concurrency: int = 8, wait: bool = True
    ) -> ServiceProcess:
        return self.start("agent", module, "--concurrency", str(concurrency), *args, wait=wait)

    def stop_all(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """Stop every process this fleet started; returns exit codes by name."""
        for service in self.processes:
            service.terminate()
        return {service.name: service.wait(timeout_s) for service in self.processes}
