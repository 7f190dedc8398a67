"""Helpers of the deploy/ tests: paths, YAML loading, rendering the credential templates,
and private ``redis-server`` and RabbitMQ nodes (our own processes on free ports, stopped by
PID; the machine's shared broker and Redis are never touched). Fixtures: conftest.py."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from process_support import free_port, rabbitmq_node_env, rabbitmq_server, stop, tail

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
RENDER = DEPLOY / "render.sh"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"
REDIS_ACL = DEPLOY / "redis" / "users.acl"
ENV_EXAMPLE = DEPLOY / ".env.example"

# Service users of deploy/rabbitmq/definitions.json and deploy/redis/users.acl.
AMQP_USERS = ("admin", "scheduler", "supervisor", "agent", "client", "keda")
REDIS_USERS = ("admin", "scheduler", "supervisor", "agent", "client")


def amqp_password_var(user: str) -> str:
    return "RABBITMQ_ADMIN_PASSWORD" if user == "admin" else f"AMQP_{user.upper()}_PASSWORD"


def redis_password_var(user: str) -> str:
    return f"REDIS_{user.upper()}_PASSWORD"


def placeholder(var: str) -> str:
    """How a template names an environment variable for deploy/render.sh: ``${VAR}``."""
    return "${" + var + "}"


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def render(template: Path, output: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run deploy/render.sh (the script compose uses) on ``template``."""
    return subprocess.run(
        ["sh", str(RENDER), str(template), str(output)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    """A fresh password for every ${VAR} the templates name."""
    names = {amqp_password_var(u) for u in AMQP_USERS} | {
        redis_password_var(u) for u in REDIS_USERS
    }
    return {name: secrets.token_urlsafe(18) for name in sorted(names)}


# --------------------------------------------------------------------------- private servers


def _wait(probe: Any, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout}s:\n{tail(log)}")
        time.sleep(0.2)


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _amqp_answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 1) as s:
        s.settimeout(2)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        return s.recv(7)[:1] == b"\x01"


@dataclass
class PrivateRedis:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, user: str, password: str, db: int = 0) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/{db}"


@dataclass
class PrivateRabbit:
    port: int
    proc: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]
    log: Path
    workdir: Path

    def url(self, user: str, password: str) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sasfleet-deploy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def private_redis(workdir: Path, passwords: dict[str, str]) -> Iterator[PrivateRedis]:
    """``redis-server`` on a free port with deploy/redis/users.acl (rendered)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make services` (it installs it)")
    acl = workdir / "users.acl"
    done = render(REDIS_ACL, acl, passwords)
    assert done.returncode == 0, done.stderr
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(server, "--port", str(port), "--bind", "127.0.0.1", "--aclfile", str(acl)),
                *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: _redis_ping(port), proc, "redis-server", log, 15)
        yield PrivateRedis(port, proc, log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def private_rabbitmq(workdir: Path, passwords: dict[str, str]) -> Iterator[PrivateRabbit]:
    """A private RabbitMQ node (own epmd, ports, data dir) that loads
    deploy/rabbitmq/definitions.json (rendered) at boot. The machine's broker is not
    touched."""
    server = rabbitmq_server()
    epmd_bin = shutil.which("epmd")
    if epmd_bin is None:
        pytest.fail("epmd (Erlang) is not installed: run `make services`")
    base = workdir / "rabbitmq"
    base.mkdir()
    definitions = base / "definitions.json"
    done = render(DEFINITIONS, definitions, passwords)
    assert done.returncode == 0, done.stderr
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\nload_definitions = {definitions}\n",
        encoding="utf-8",
    )
    (base / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    log = base / "node.log"
    epmd = subprocess.Popen(
        [epmd_bin, "-port", str(epmd_port), "-address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = rabbitmq_node_env(
        base, f"sasfleet-{uuid.uuid4().hex[:8]}@localhost", epmd_port, dist_port
    )
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [server],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=base,
                start_new_session=True,
            )
        try:
            _wait(lambda: _amqp_answers(port), proc, "rabbitmq-server", log, 90)
            yield PrivateRabbit(port, proc, epmd, log, base)
        finally:
            stop(proc, group=True, timeout=60)
    finally:
        stop(epmd)


# --------------------------------------------------------------------------- the code's names


def settings_env_names() -> set[str]:
    """Every environment variable the configuration reads: ``SASFLEET_<FIELD>`` and, for
    files holding a value (Docker/Kubernetes secrets), ``SASFLEET_<FIELD>_FILE``."""
    from sasfleet.shared.config import ENV_PREFIX, Settings

    names = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
    return names | {f"{name}_FILE" for name in names}


def otel_env_names() -> set[str]:
    """The standard OpenTelemetry variables the SDK (and so the fleet's tracing) reads."""
    import opentelemetry.environment_variables as api_env
    import opentelemetry.sdk.environment_variables as sdk_env

    return {n for module in (api_env, sdk_env) for n in dir(module) if n.startswith("OTEL_")}


def assert_known_env(names: Any, where: str) -> None:
    """Each name is a SASFLEET_* setting (or its _FILE form) or a standard OTEL_* variable."""
    settings, otel = settings_env_names(), otel_env_names()
    for name in names:
        if name.startswith("SASFLEET_"):
            assert name in settings, f"{where}: {name} is not a setting of shared/config.py"
        elif name.startswith("OTEL_"):
            assert name in otel, f"{where}: {name} is not an OpenTelemetry SDK variable"
        else:
            pytest.fail(f"{where}: {name} is neither a SASFLEET_ setting nor an OTEL_ variable")


def assert_cli_accepts(argv: list[str], where: str) -> Any:
    """``sasfleet ARGV`` resolves to a real command and its flags parse (nothing runs).
    Returns the leaf click context (``ctx.params`` holds the parsed values)."""
    import click

    from sasfleet.cli.main import main

    command: click.Command = main
    ctx: click.Context | None = None
    name, args = "sasfleet", list(argv)
    try:
        while True:
            ctx = command.make_context(name, args, parent=ctx)
            if not isinstance(command, click.Group):
                return ctx
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
            assert rest, f"{where}: {argv!r} names a group, not a command"
            name, sub, args = command.resolve_command(ctx, rest)
            assert sub is not None and name is not None, f"{where}: no command {argv!r}"
            command = sub
    except click.UsageError as exc:
        pytest.fail(f"{where}: `sasfleet {' '.join(argv)}` is not a valid command: {exc}")


def assert_task_module(module: str, where: str) -> None:
    """The task module an agent runs exists and registers tasks."""
    import importlib

    from sasfleet.agent.registry import load_registry

    importlib.invalidate_caches()
    registry = load_registry(module)
    assert registry.tasks, f"{where}: {module} registers no task"


SERVICE_COMMANDS = {("scheduler", "run"), ("supervisor", "run"), ("agent", "run")}


def service_of(argv: list[str]) -> str | None:
    """``scheduler``/``supervisor``/``agent`` when ARGV runs that service."""
    return argv[0] if tuple(argv[:2]) in SERVICE_COMMANDS else None


@functools.cache
def health_paths() -> dict[str, int]:
    """What the services' HTTP endpoint answers for each path (status), from the real code."""
    import asyncio
    import urllib.error
    import urllib.request

    from sasfleet.shared.telemetry import metrics
    from sasfleet.shared.telemetry.health import Health, serving

    async def probe() -> dict[str, int]:
        health = Health("test", "test-1", ("redis",))
        port = free_port()
        found: dict[str, int] = {}
        async with serving(health, "127.0.0.1", port):
            for path in ("/healthz", "/readyz", "/metrics", "/no-such-path"):

                def get(p: str = path) -> int:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=5) as r:
                            return int(r.status)
                    except urllib.error.HTTPError as exc:
                        return int(exc.code)

                found[path] = await asyncio.to_thread(get)
        return found

    was_exported = metrics.exported()
    try:
        return asyncio.run(probe())
    finally:
        metrics.set_exported(was_exported)  # serving() marks the process as scraped


def served(path: str) -> bool:
    """Whether the services' HTTP endpoint serves ``path`` (anything but a 404)."""
    return health_paths().get(path, 404) != 404
