"""A private RabbitMQ node and a private Redis server for the chaos suite.

Faults that restart the broker or Redis must never touch the machine's shared services, so
the chaos suite starts its own: a second RabbitMQ node (its own node name, AMQP and
distribution ports, data and log directories, an empty plugin list so it binds no
management port) and a Redis server with AOF ``appendfsync always``, each on free ports,
each a child process of this one. They are stopped by their own PID only (the Erlang VM's
PID, never by name), and a restart reuses the same data directory, so quorum queues,
persistent messages and the AOF survive it.

The node registers its name with the machine's ``epmd`` (as every Erlang node on a host
does); nothing else is shared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout_s):
            return True
    except OSError:
        return False


def amqp_ready(port: int, timeout_s: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 broker on ``port`` answers the protocol header with its
    Connection.Start frame (a node still booting accepts TCP and then resets it)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(7)[:1] == b"\x01"  # a METHOD frame
    except OSError:
        return False


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` is gone (or a zombie); True if it went in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.05)
    return not _running(pid)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
                found.extend(int(p) for p in fh.read().split())
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@dataclass
class PrivateRabbit:
    """One RabbitMQ node of our own. ``start``/``stop``/``restart`` block (use a thread)."""

    root: Path
    name: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    beam_pid: int | None = None
    starts: int = 0

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def home(self) -> Path:
        return self.root / "rabbitmq"

    def _env(self) -> dict[str, str]:
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        (home / "enabled_plugins").write_text("[].\n")
        (home / "rabbitmq-env.conf").write_text("")
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                "HOME": str(home),  # its own Erlang cookie
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(home / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
                "RABBITMQ_PID_FILE": str(home / "beam.pid"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        )
        return env

    def start(self, timeout_s: float = 90.0) -> float:
        """Start the node (same data directory as before); returns seconds until it answers
        the AMQP protocol header."""
        if not os.access(RABBITMQ_SERVER, os.X_OK):
            raise RuntimeError(f"{RABBITMQ_SERVER} is not installed (apt install rabbitmq-server)")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; not starting a second node on it")
        t0 = time.monotonic()
        env = self._env()
        with contextlib.suppress(FileNotFoundError):
            (self.home / "beam.pid").unlink()
        log = open(self.home / "console.log", "ab")  # noqa: SIM115 (owned by the child)
        try:
            self.proc = subprocess.Popen(
                [RABBITMQ_SERVER],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.home,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = t0 + timeout_s
        while not amqp_ready(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"RabbitMQ node {self.nodename} exited with {self.proc.returncode}; "
                    f"see {self.home / 'console.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"RabbitMQ node {self.nodename} not up after {timeout_s}s")
            time.sleep(0.1)
        self.beam_pid = self._find_beam()
        return time.monotonic() - t0

    def _find_beam(self) -> int | None:
        """The Erlang VM's PID: a descendant of the process we started."""
        assert self.proc is not None
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            if _comm(pid).startswith("beam"):
                return pid
            todo.extend(_children(pid))
        return None

    def stop(self, timeout_s: float = 60.0, *, kill: bool = False) -> float:
        """SIGTERM (a clean shutdown) or SIGKILL to our own Erlang VM; returns seconds."""
        t0 = time.monotonic()
        if self.proc is None:
            return 0.0
        pid = self.beam_pid or self._find_beam()
        if pid is not None and _running(pid):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            if not _wait_exit(pid, timeout_s):
                os.kill(pid, signal.SIGKILL)
                _wait_exit(pid, 10)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc, self.beam_pid = None, None
        # The port must be free before a restart binds it again.
        deadline = time.monotonic() + 10
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return time.monotonic() - t0

    def restart(self, *, kill: bool = False) -> tuple[float, float]:
        """Stop then start the same node; returns (seconds to stop, seconds to start)."""
        return self.stop(kill=kill), self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PrivateRedis:
    """One Redis server of our own, AOF with ``appendfsync always``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def home(self) -> Path:
        return self.root / "redis"

    def start(self, timeout_s: float = 30.0) -> float:
        """Start the server on its data directory (the AOF is replayed); returns seconds
        until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt install redis-server)")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; not starting Redis on it")
        self.home.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.home),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.home / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        deadline = t0 + timeout_s
        while not self._pong():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}; see {self.home}/redis.log"
                )
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise TimeoutError(f"private Redis not up after {timeout_s}s")
            time.sleep(0.05)
        return time.monotonic() - t0

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.settimeout(0.5)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 30.0, *, kill: bool = False) -> float:
        """SIGTERM (Redis fsyncs and exits) or SIGKILL (a crash: the AOF is all there is)."""
        t0 = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        return time.monotonic() - t0

    def restart(self, *, kill: bool = False) -> tuple[float, float]:
        return self.stop(kill=kill), self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
