"""TLS and credentials end to end: ``amqps://`` and ``rediss://`` URLs with passwords, from
environment variables and from ``SASFLEET_<NAME>_FILE`` files, and the passwords never in a
log line, an error, or the CLI's output.

The servers are our own (tls_support.py): a throwaway CA and a server certificate for
127.0.0.1 made with ``openssl``, a ``redis-server`` with a TLS port only and
``requirepass``, and a RabbitMQ node with an SSL listener only and one password user, on free
ports. Every client verifies the server certificate against that CA (``cafile`` in the AMQP
URL's query, read by aiormq; ``ssl_ca_certs`` in the Redis URL's query, read by redis-py), so
a plaintext connection or an unverified one could not have worked. The machine's shared
broker and Redis are not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tls_support import (
    Certs,
    TlsRabbit,
    TlsRedis,
    make_certs,
    start_tls_rabbit,
    start_tls_redis,
    tls_refuses_plaintext,
)

from sasfleet.examples.tasks import order_job
from sasfleet.shared.client import Client
from sasfleet.shared.config import load_settings
from sasfleet.tools.fleet import LocalFleet, ServiceProcess

REPO = Path(__file__).resolve().parents[2]
AMQP_USER = "fleet"
# Distinctive, URL-safe passwords: any occurrence in an output is a leak, never a fluke.
AMQP_SECRET = f"AmqpTlsSecret{secrets.token_hex(8)}"
REDIS_SECRET = f"RedisTlsSecret{secrets.token_hex(8)}"
WRONG_AMQP_SECRET = f"WrongAmqpSecret{secrets.token_hex(8)}"
WRONG_REDIS_SECRET = f"WrongRedisSecret{secrets.token_hex(8)}"
SECRETS = (AMQP_SECRET, REDIS_SECRET, WRONG_AMQP_SECRET, WRONG_REDIS_SECRET)
FAST = {
    "SASFLEET_LEASE_S": "2",
    "SASFLEET_HEARTBEAT_S": "0.5",
    "SASFLEET_SUPERVISOR_TICK_S": "0.2",
    "SASFLEET_RETRY_INITIAL_S": "0.05",
    "SASFLEET_RETRY_MAX_S": "0.5",
}
# A URL with a password: scheme://user:PASSWORD@ (the password must be masked: asterisks,
# ``***`` from sasfleet's masking or ``******`` from aio-pika's).
URL_WITH_PASSWORD = re.compile(r"\w+://[^:/@\s\"']*:([^@/\s\"']+)@")


def assert_no_secret(text: str, where: str) -> None:
    """No password (right or wrong) in ``text``, and every URL in it is masked."""
    for secret in SECRETS:
        assert secret not in text, f"a password leaked into {where}"
    unmasked = [m.group(0) for m in URL_WITH_PASSWORD.finditer(text) if m.group(1).strip("*")]
    assert not unmasked, f"an unmasked URL in {where}: {unmasked[:3]}"


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Tls:
    certs: Certs
    rabbit: TlsRabbit
    redis: TlsRedis
    workdir: Path

    def amqp_url(self, password: str = AMQP_SECRET) -> str:
        return self.rabbit.url(AMQP_USER, password, self.certs)

    def redis_url(self, password: str = REDIS_SECRET) -> str:
        return self.redis.url(password, self.certs)

    def secret_file(self, name: str, value: str) -> Path:
        """A file holding ``value``, as a Docker/Kubernetes secret is mounted."""
        path = self.workdir / "secrets" / name
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    workdir = tmp_path_factory.mktemp("tls")
    certs = make_certs(workdir / "certs")
    redis = start_tls_redis(workdir, certs, REDIS_SECRET)
    try:
        rabbit = start_tls_rabbit(workdir, certs, AMQP_USER, AMQP_SECRET)
        try:
            # TLS only: a plaintext client gets no Redis or AMQP answer on either port.
            assert tls_refuses_plaintext(redis.port), "Redis answers plaintext"
            assert tls_refuses_plaintext(rabbit.port), "RabbitMQ answers plaintext"
            yield Tls(certs, rabbit, redis, workdir)
        finally:
            rabbit.stop()
    finally:
        redis.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SASFLEET_* of the caller's (e.g. the shared broker's URL) reaches this test."""
    for name in list(os.environ):
        if name.startswith("SASFLEET_"):
            monkeypatch.delenv(name)


@dataclass(frozen=True)
class CliResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, f"sasfleet {' '.join(self.argv)}: {self.stderr[-3000:]}"
        return msgspec.json.decode(self.stdout)


async def cli(env: dict[str, str], *args: str, timeout: float = 60.0) -> CliResult:
    """``python -m sasfleet.cli ARGS`` with exactly ``env``'s SASFLEET_* settings."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sasfleet.cli",
        *args,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:  # a timeout, or the test gave up on it: stop our child
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            pytest.fail(f"sasfleet {' '.join(args)} did not finish within {timeout}s")
        raise
    result = CliResult(args, proc.returncode or 0, out.decode(), err.decode())
    assert_no_secret(result.stdout + result.stderr, f"the output of sasfleet {' '.join(args)}")
    return result


def sigterm_once(services: list[ServiceProcess], timeout: float = 30.0) -> dict[str, int]:
    """SIGTERM each service once, then wait for all; their exit codes by name."""
    for service in services:
        service.signal(signal.SIGTERM)
    codes = {}
    for service in services:
        try:
            codes[service.name] = service.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            service.kill()
            codes[service.name] = service.proc.returncode
    return codes


async def wait_for_log(service: ServiceProcess, text: str, timeout: float = 45.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        log = service.log()
        if text in log:
            return log
        assert service.alive(), f"{service.name} exited:\n{log[-3000:]}"
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{service.name} never logged {text!r} in {timeout}s:\n{log[-3000:]}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- the tests


async def test_fleet_runs_over_tls_with_credentials_from_env_and_files(
    tls: Tls,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    redis_file = tls.secret_file(f"{prefix}-redis-url", tls.redis_url())
    amqp_file = tls.secret_file(f"{prefix}-amqp-url", tls.amqp_url())
    settings = load_settings(amqp_url=tls.amqp_url(), redis_url=tls.redis_url(), prefix=prefix)

    # The services: the AMQP URL in SASFLEET_AMQP_URL, the Redis URL in a file named by
    # SASFLEET_REDIS_URL_FILE. The plain SASFLEET_REDIS_URL points nowhere: the file must win.
    service_env = {
        **FAST,
        "SASFLEET_PREFIX": prefix,
        "SASFLEET_AMQP_URL": tls.amqp_url(),
        "SASFLEET_REDIS_URL": "redis://127.0.0.1:1/0",
        "SASFLEET_REDIS_URL_FILE": str(redis_file),
    }
    fleet = LocalFleet(settings, env=service_env, workdir=tmp_path, cwd=REPO)
    request.node._sasfleet_fleet = fleet  # tests/conftest.py attaches the logs on failure
    try:
        started = [
            fleet.start("scheduler", wait=False),
            fleet.start("supervisor", wait=False),
            # DEBUG: the most log lines that could carry a URL.
            fleet.start(
                "agent",
                "sasfleet.examples.tasks",
                "--concurrency",
                "8",
                "--log-level",
                "DEBUG",
                wait=False,
            ),
        ]
        for service in started:
            await asyncio.to_thread(fleet.wait_ready, service, 60.0)
        agent = started[-1]

        # The Python client: the AMQP URL from a file, the Redis URL from the variable.
        # The plain SASFLEET_AMQP_URL points nowhere: the file must win.
        with monkeypatch.context() as env:
            env.setenv("SASFLEET_AMQP_URL_FILE", str(amqp_file))
            env.setenv("SASFLEET_AMQP_URL", "amqp://nobody@127.0.0.1:1/")
            env.setenv("SASFLEET_REDIS_URL", tls.redis_url())
            client_settings = load_settings(prefix=prefix)
        assert client_settings.amqp_url.get_secret_value() == tls.amqp_url()
        async with Client(client_settings) as client:
            echo = await client.submit("echo", {"x": 1})
            saga = await client.submit(
                steps=order_job("o-tls", flaky_step="charge_card", flaky_until=2)
            )
            for job_id, result in ((echo, {"x": 1}), (saga, None)):
                outcome = await client.wait(job_id, timeout=45)
                assert outcome.status == "succeeded", (job_id, outcome)
                if result is not None:
                    assert outcome.result == result
            assert_no_secret(repr(await client.get(saga)), "the job view")

        # The CLI: the AMQP URL from the variable, the Redis URL from a file.
        cli_env = {
            "SASFLEET_PREFIX": prefix,
            "SASFLEET_AMQP_URL": tls.amqp_url(),
            "SASFLEET_REDIS_URL_FILE": str(redis_file),
        }
        submitted = (
            await cli(cli_env, "submit", "echo", "--payload", '{"x":1}', "--wait", "--json")
        ).json()
        assert submitted["status"] == "succeeded", submitted
        assert submitted["result"] == {"x": 1}

        shown = (await cli(cli_env, "job", "show", submitted["job_id"], "--json")).json()
        assert shown["status"] == "succeeded"
        assert {"submit", "dispatch", "claim", "succeed"} <= {e["event"] for e in shown["history"]}
        assert (await cli(cli_env, "job", "show", saga, "--json")).json()["status"] == "succeeded"
        listed = (await cli(cli_env, "jobs", "--json")).json()
        assert {echo, saga, submitted["job_id"]} <= {j["job_id"] for j in listed}

        agents = (await cli(cli_env, "agents", "--json")).json()
        assert [a["pid"] for a in agents] == [agent.pid], agents
        assert "echo" in agents[0]["tasks"]
        table = await cli(cli_env | {"COLUMNS": "250"}, "agents")  # the table, too
        assert table.returncode == 0 and f"-{agent.pid}-" in table.stdout, table.stdout

        # `config show` masks both passwords, and shows the URLs it got (the Redis one from
        # the file: its TLS port and CA, not the plain variable's).
        config = (await cli(cli_env, "config", "show")).json()
        assert config["amqp_url"] == tls.amqp_url().replace(AMQP_SECRET, "***")
        assert config["redis_url"] == tls.redis_url().replace(REDIS_SECRET, "***")
        assert config["amqp_url"].startswith("amqps://fleet:***@127.0.0.1:")
        assert config["redis_url"].startswith(f"rediss://:***@127.0.0.1:{tls.redis.port}/0?")

        for service in fleet.processes:
            assert service.alive(), f"{service.name} died:\n{service.log()[-3000:]}"
        # A clean stop over TLS: one SIGTERM each, exit code 0. (Not LocalFleet.stop_all: it
        # sends a second SIGTERM, which kills a process already past its signal handlers.)
        codes = await asyncio.to_thread(sigterm_once, fleet.processes)
        assert codes == {s.name: 0 for s in fleet.processes}, codes
    finally:
        await asyncio.to_thread(fleet.stop_all, 15.0)  # whatever is still running
    # The logs, including each service's shutdown lines.
    for service in fleet.processes:
        log = service.log()
        assert log.strip(), f"{service.name} logged nothing"
        assert_no_secret(log, f"the log of {service.name}")


async def cli_errors(tls: Tls, prefix: str) -> None:
    """The CLI with a wrong password, or without the CA (the server's certificate cannot be
    verified), fails and says why; its error does not show the password either."""
    base = {
        "SASFLEET_PREFIX": prefix,
        "SASFLEET_AMQP_URL": tls.amqp_url(),
        "SASFLEET_REDIS_URL": tls.redis_url(),
    }
    wrong_amqp = {"SASFLEET_AMQP_URL": tls.amqp_url(WRONG_AMQP_SECRET)}
    wrong_redis = {"SASFLEET_REDIS_URL": tls.redis_url(WRONG_REDIS_SECRET)}
    no_ca_amqp = {
        "SASFLEET_AMQP_URL": f"amqps://{AMQP_USER}:{AMQP_SECRET}@127.0.0.1:{tls.rabbit.port}/"
    }
    no_ca_redis = {"SASFLEET_REDIS_URL": f"rediss://:{REDIS_SECRET}@127.0.0.1:{tls.redis.port}/0"}
    submit = ("submit", "echo", "--payload", '{"x":1}', "--wait", "--json")
    cases = [
        (wrong_amqp, submit, "ACCESS_REFUSED"),
        (no_ca_amqp, submit, "CERTIFICATE_VERIFY_FAILED"),
        (wrong_redis, ("job", "show", "no-such-job", "--json"), "invalid username-password pair"),
        (wrong_redis, ("agents", "--json"), "invalid username-password pair"),
        (no_ca_redis, ("agents",), "CERTIFICATE_VERIFY_FAILED"),
    ]
    # Concurrently: redis-py retries a refused connection for several seconds.
    results = await asyncio.gather(*(cli(base | env, *args) for env, args, _ in cases))
    for (_, args, why), failed in zip(cases, results, strict=True):
        assert failed.returncode != 0, f"sasfleet {' '.join(args)} did not fail"
        assert why in failed.stderr, f"sasfleet {' '.join(args)}: {failed.stderr[-2000:]}"

    # `config show` needs no server: the wrong passwords are masked all the same.
    config = (await cli(base | wrong_amqp | wrong_redis, "config", "show")).json()
    assert config["amqp_url"] == tls.amqp_url().replace(AMQP_SECRET, "***")
    assert config["redis_url"] == tls.redis_url().replace(REDIS_SECRET, "***")


async def test_wrong_passwords_are_masked_while_services_wait(
    tls: Tls, clean_env: None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    wrong_amqp, wrong_redis = tls.amqp_url(WRONG_AMQP_SECRET), tls.redis_url(WRONG_REDIS_SECRET)
    settings = load_settings(amqp_url=wrong_amqp, redis_url=tls.redis_url(), prefix=prefix)
    fleet = LocalFleet(settings, env={**FAST, "SASFLEET_PREFIX": prefix}, workdir=tmp_path)
    fleet.cwd = REPO
    request.node._sasfleet_fleet = fleet
    # The CLI's failures meanwhile (each takes seconds of retries).
    cli_checks = asyncio.create_task(cli_errors(tls, prefix))
    try:
        # Redis accepts it, RabbitMQ refuses the wrong password: it waits for the broker.
        no_broker = fleet.start("supervisor", "--log-level", "DEBUG", wait=False)
        # The wrong Redis password (in a file): it waits for Redis.
        fleet.env.update(
            SASFLEET_AMQP_URL=tls.amqp_url(),
            SASFLEET_REDIS_URL_FILE=str(tls.secret_file(f"{prefix}-wrong-redis", wrong_redis)),
        )
        no_redis = fleet.start("scheduler", "--log-level", "DEBUG", wait=False)

        broker_log = await wait_for_log(no_broker, "rabbitmq unavailable")
        redis_log = await wait_for_log(no_redis, "redis unavailable")
        await asyncio.sleep(1)  # a retry or two more
        for service, log, refused in (
            (no_broker, broker_log, "ACCESS_REFUSED"),
            (no_redis, redis_log, "invalid username-password pair"),
        ):
            assert refused in log, f"{service.name} does not say why:\n{log[-3000:]}"
            assert not service.ready_file.exists(), f"{service.name} claims to be ready"
            assert service.alive(), f"{service.name} crashed instead of waiting"
            assert_no_secret(service.log(), f"the log of {service.name}")
        await cli_checks
    finally:
        if not cli_checks.done():
            cli_checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cli_checks
        await asyncio.to_thread(fleet.stop_all, 15.0)
    for service in fleet.processes:
        assert_no_secret(service.log(), f"the log of {service.name}")
