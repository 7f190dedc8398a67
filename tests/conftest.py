"""Shared fixtures of the SAS Fleet tests, and the tiers.

Each folder under tests/ is a tier, and every test in it carries the tier's marker (set here
from the folder, so the two cannot disagree): ``unit`` (pure logic, no network),
``store`` (the state scripts on a real Redis and Redis Cluster), ``system`` (the services as
real processes on real RabbitMQ and Redis), ``deploy`` and ``chaos``. ``make test`` runs
them in that order and stops at the first tier that fails.

System fixtures run the real services as OS processes (``LocalFleet``) under a prefix
of their own per test, and clean up only that prefix's Redis keys and broker queues. They
FAIL (never skip) when RabbitMQ or Redis is unreachable.

Per-test environment for the services: ``@pytest.mark.fleet_env(SASFLEET_X="...")`` adds
to (or overrides) the fast defaults in :data:`FAST_ENV`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from redis_cluster_support import RedisClusterNodes, RedisTarget, start_redis_cluster

from sasfleet.shared.amqp.topology import QUEUE_HEADER, REASON_HEADER, Names
from sasfleet.shared.client import Client
from sasfleet.shared.config import ENV_PREFIX, Settings, load_settings, mask_url
from sasfleet.shared.state.keys import Keys
from sasfleet.shared.state.views import JobView
from sasfleet.tools.fleet import LocalFleet, ServiceProcess
from sasfleet.tools.purge import purge_fleet

REPO_ROOT = Path(__file__).resolve().parent.parent
# The benchmark harness (`bench/`) is a folder of the repository, not of the package.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Fast timings: a killed agent's step is recovered ~2 s after its last lease renewal.
FAST_ENV: dict[str, str] = {
    "SASFLEET_LEASE_S": "2",
    "SASFLEET_HEARTBEAT_S": "0.5",
    "SASFLEET_SUPERVISOR_TICK_S": "0.2",
    "SASFLEET_RETRY_INITIAL_S": "0.05",
    "SASFLEET_RETRY_MAX_S": "0.5",
    "SASFLEET_DISPATCH_TIMEOUT_S": "30",
}

SERVICES_HINT = "run `make services` (or `bash deploy/services.sh`) to start them"
T = TypeVar("T")


TIERS = ("unit", "store", "system", "deploy", "chaos")
TESTS_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet_env(**env): extra SASFLEET_* environment for the test's services"
    )


def tier_of(path: Path) -> str:
    """The tier of a test file: the folder under tests/ it lives in."""
    parts = path.resolve().relative_to(TESTS_DIR).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{path}: every test lives in a tier folder, one of {TIERS}")
    return parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        marked = {m.name for m in item.iter_markers() if m.name in TIERS} - {tier}
        if marked:
            raise pytest.UsageError(
                f"{item.nodeid} is in tests/{tier} but marked {sorted(marked)}: "
                "the folder is the tier"
            )
        item.add_marker(getattr(pytest.mark, tier))


# --------------------------------------------------------------------------- reachability


def _probe_redis(url: str) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 3) as s:
        s.settimeout(3)
        s.sendall(b"PING\r\n")
        answer = s.recv(64)
    if not (answer.startswith(b"+PONG") or answer.startswith(b"-NOAUTH")):
        raise ConnectionError(f"unexpected answer to PING: {answer!r}")


def _probe_amqp(url: str) -> None:
    async def connect() -> None:
        connection = await aio_pika.connect(url, timeout=5)
        await connection.close()

    asyncio.run(connect())


def _require(*needed: str) -> None:
    """Fail the test (never skip) when one of the ``needed`` services does not answer."""
    base = load_settings()
    probes = {
        "Redis": (base.redis_url.get_secret_value(), _probe_redis),
        "RabbitMQ": (base.amqp_url.get_secret_value(), _probe_amqp),
    }
    problems = []
    for what in needed:
        url, probe = probes[what]
        try:
            probe(url)
        except Exception as exc:
            problems.append(f"{what} at {mask_url(url)} is unreachable ({exc!r})")
    if problems:
        pytest.fail("; ".join(problems) + f": {SERVICES_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def redis_up() -> None:
    """Fails the test (never skips) when Redis does not answer (the store tier needs no
    broker)."""
    _require("Redis")


@pytest.fixture(scope="session")
def broker_and_redis_up() -> None:
    """Fails the test (never skips) when RabbitMQ or Redis does not answer."""
    _require("Redis", "RabbitMQ")


# --------------------------------------------------------------------------- settings, fleet


@pytest.fixture
def prefix() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fleet_env(request: pytest.FixtureRequest, prefix: str) -> dict[str, str]:
    """The SASFLEET_* environment of this test's services (and CLI calls)."""
    env = dict(FAST_ENV)
    for marker in reversed(list(request.node.iter_markers("fleet_env"))):
        env.update({k: str(v) for k, v in marker.kwargs.items()})
    env["SASFLEET_PREFIX"] = prefix
    return env


@pytest.fixture
def settings(fleet_env: dict[str, str], broker_and_redis_up: None) -> Settings:
    """Settings of the test's fleet: a unique prefix plus the fast timings."""
    overrides = {
        k[len(ENV_PREFIX) :].lower(): v for k, v in fleet_env.items() if k.startswith(ENV_PREFIX)
    }
    return load_settings(**overrides)


@pytest.fixture
def pools(settings: Settings) -> set[str]:
    """Agent pools whose queues teardown deletes (add any a test uses)."""
    return {settings.default_pool}


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest,
    settings: Settings,
    fleet_env: dict[str, str],
    pools: set[str],
) -> AsyncIterator[LocalFleet]:
    """A LocalFleet under the test's prefix (nothing started yet).

    Teardown stops every process (SIGTERM, then SIGKILL), then deletes the prefix's keys
    and queues. When the test fails, the services' logs are attached to its report.
    """
    local = LocalFleet(settings, env=dict(fleet_env), cwd=REPO_ROOT)
    request.node._sasfleet_fleet = local
    try:
        yield local
    finally:
        await asyncio.to_thread(local.stop_all, 15.0)
        await purge_fleet(settings, sorted(pools))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    local: LocalFleet | None = getattr(item, "_sasfleet_fleet", None)
    if local is not None and report.failed and not getattr(report, "wasxfail", None):
        for service in local.processes:
            try:
                text = service.log()
            except OSError as exc:
                text = f"(log unreadable: {exc})"
            state = "alive" if service.alive() else f"exited {service.proc.returncode}"
            report.sections.append(
                (f"sasfleet {service.name} (pid {service.pid}, {state}) log", text[-20_000:])
            )
    return report


@dataclass
class Services:
    """The standard trio of one test's fleet."""

    fleet: LocalFleet
    scheduler: ServiceProcess
    supervisor: ServiceProcess
    agent: ServiceProcess

    def all(self) -> list[ServiceProcess]:
        return list(self.fleet.processes)


def start_together(local: LocalFleet, *specs: tuple[str, tuple[str, ...]]) -> list[ServiceProcess]:
    """Start several services at once, then wait until each consumes."""
    started = [local.start(role, *args, wait=False) for role, args in specs]
    for service in started:
        local.wait_ready(service, 60.0)
    return started


@pytest.fixture
def start_services(fleet: LocalFleet) -> Callable[..., list[ServiceProcess]]:
    """``start_services(("supervisor", ()), ("agent", (module,)))``: all ready."""
    return lambda *specs: start_together(fleet, *specs)


@pytest.fixture
def services(fleet: LocalFleet) -> Services:
    """A scheduler, a supervisor and an agent (sasfleet.examples.tasks, 8 slots), all ready."""
    scheduler, supervisor, agent = start_together(
        fleet,
        ("scheduler", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "8")),
    )
    return Services(fleet, scheduler, supervisor, agent)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(settings) as connected:
        yield connected


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(), decode_responses=True
    )
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A private three-node Redis Cluster for the whole session (started on first use)."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_target(request: pytest.FixtureRequest, redis_up: None) -> RedisTarget:
    """Runs a test once against one Redis server and once against a 3-node Redis Cluster."""
    if request.param == "redis-cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster").url, cluster=True)
    return RedisTarget(load_settings().redis_url.get_secret_value(), cluster=False)


@pytest.fixture
def names(settings: Settings) -> Names:
    return Names(settings.prefix)


# --------------------------------------------------------------------------- waiting


async def wait_until(
    probe: Callable[[], Awaitable[T]], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(probe, timeout=..., what=...)``: poll until truthy, else fail."""
    return wait_until


@dataclass
class JobWaiter:
    client: Client

    async def until(
        self, job_id: str, check: Callable[[JobView], bool], *, timeout: float, what: str
    ) -> JobView:
        async def probe() -> JobView | None:
            view = await self.client.get(job_id)
            return view if view is not None and check(view) else None

        return await wait_until(probe, timeout=timeout, what=f"job {job_id}: {what}")

    async def status(self, job_id: str, status: str, *, timeout: float = 20.0) -> JobView:
        return await self.until(
            job_id, lambda v: v.status == status, timeout=timeout, what=f"status {status}"
        )


@pytest.fixture
def jobs(client: Client) -> JobWaiter:
    """Waits on job state in Redis with a deadline."""
    return JobWaiter(client)


# --------------------------------------------------------------------------- raw AMQP


def header(message: AbstractIncomingMessage, name: str) -> str | None:
    """A header of a received message as text (None when absent)."""
    value = (message.headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


@dataclass
class RawAmqp:
    """A plain aio-pika client, as a non-Python team would use the broker."""

    channel: AbstractChannel
    names: Names
    dead: AbstractQueue
    seen_dead: list[AbstractIncomingMessage] = field(default_factory=list)
    header = staticmethod(header)

    async def publish(self, body: bytes, routing_key: str | None = None, **props: Any) -> None:
        """Persistent publish to the default exchange (routing key: the submit queue)."""
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **props,
        )
        await self.channel.default_exchange.publish(
            message, routing_key=routing_key or self.names.submit
        )

    async def submit(self, doc: Any, **props: Any) -> None:
        await self.publish(msgspec.json.encode(doc), **props)

    async def reply_queue(self) -> AbstractQueue:
        return await self.channel.declare_queue(exclusive=True, auto_delete=True)

    async def next_message(
        self, queue: AbstractQueue, *, timeout: float = 15.0, what: str = "a reply"
    ) -> AbstractIncomingMessage:
        async def probe() -> AbstractIncomingMessage | None:
            return await queue.get(no_ack=True, fail=False)

        return await wait_until(probe, timeout=timeout, what=what)

    async def dead_letters(
        self,
        match: Callable[[AbstractIncomingMessage], bool],
        count: int,
        *,
        timeout: float = 15.0,
        what: str = "dead letters",
    ) -> list[AbstractIncomingMessage]:
        """Wait until at least ``count`` dead letters ``match``; returns those."""

        async def probe() -> list[AbstractIncomingMessage] | None:
            while (message := await self.dead.get(no_ack=True, fail=False)) is not None:
                self.seen_dead.append(message)
            found = [m for m in self.seen_dead if match(m)]
            return found if len(found) >= count else None

        return await wait_until(probe, timeout=timeout, what=f"{count} {what}")

    async def dead_letter(
        self,
        match: Callable[[AbstractIncomingMessage], bool],
        *,
        timeout: float = 15.0,
        what: str = "a dead letter",
    ) -> AbstractIncomingMessage:
        """The first message in ``<prefix>.dead`` that ``match``es (all read are kept)."""
        for message in self.seen_dead:
            if match(message):
                return message

        async def probe() -> AbstractIncomingMessage | None:
            while (message := await self.dead.get(no_ack=True, fail=False)) is not None:
                self.seen_dead.append(message)
                if match(message):
                    return message
            return None

        try:
            return await wait_until(probe, timeout=timeout, what=what)
        except pytest.fail.Exception:
            seen = [
                (header(m, REASON_HEADER), header(m, QUEUE_HEADER), m.body[:200])
                for m in self.seen_dead
            ]
            pytest.fail(f"no dead letter matched ({what}) within {timeout}s; seen: {seen!r}")


@pytest.fixture
async def raw(settings: Settings, names: Names, services: Services) -> AsyncIterator[RawAmqp]:
    """A raw aio-pika channel on the broker (the services have declared the topology)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel(publisher_confirms=True)
        dead = await channel.declare_queue(
            names.dead, durable=True, arguments={"x-queue-type": "quorum"}
        )
        yield RawAmqp(channel, names, dead)
    finally:
        await connection.close()


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return msgspec.json.decode(self.stdout)


@pytest.fixture
def sasfleet_cli(fleet_env: dict[str, str]) -> Callable[..., Awaitable[CliResult]]:
    """Runs ``python -m sasfleet.cli ARGS`` with the test's environment."""
    env = {**os.environ, **fleet_env, "PYTHONUNBUFFERED": "1"}

    async def run(*args: str, timeout: float = 60.0) -> CliResult:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sasfleet.cli",
            *args,
            env=env,
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"sasfleet {' '.join(args)} did not finish within {timeout}s")
        return CliResult(proc.returncode or 0, out.decode(), err.decode())

    return run
