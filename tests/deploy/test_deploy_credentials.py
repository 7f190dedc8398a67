"""The production users (deploy/rabbitmq/definitions.json, deploy/redis/users.acl) against
real servers: a private RabbitMQ node that loads the definitions at boot and a private
``redis-server --aclfile``, both rendered by deploy/render.sh, on free ports of our own.

One end-to-end run gives every service its own RabbitMQ and Redis user and drives the code
paths that touch the broker and Redis (submit, dispatch, retry timers, delayed starts,
compensation, escalation, cancellation, a SIGKILLed agent recovered by the supervisors,
the CLI's reads and schedules): the jobs must end as expected, no service may log a
permission error, and Redis' ACL LOG must stay empty. The other tests show what the users
may *not* do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import msgspec
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from deploy_support import (
    REPO,
    PrivateRabbit,
    PrivateRedis,
    amqp_password_var,
    free_port,
    redis_password_var,
)

from sasfleet.examples.tasks import order_job
from sasfleet.shared.amqp.topology import Names
from sasfleet.shared.client import Client
from sasfleet.shared.config import Settings, load_settings
from sasfleet.tools.fleet import LocalFleet, ServiceProcess

PREFIX = "sasfleet"  # the definitions and ACLs are written for the default prefix
NAMES = Names(PREFIX)
FAST = {
    "SASFLEET_LEASE_S": "2",
    "SASFLEET_HEARTBEAT_S": "0.5",
    "SASFLEET_SUPERVISOR_TICK_S": "0.2",
    "SASFLEET_RETRY_INITIAL_S": "0.05",
    "SASFLEET_RETRY_MAX_S": "0.5",
    "SASFLEET_AGENT_TIMEOUT_S": "3",
}
PERMISSION_ERRORS = ("ACCESS_REFUSED", "NOPERM", "NOAUTH", "WRONGPASS", "not authorized")


class Users:
    """URLs of each user on the private servers."""

    def __init__(self, rabbit: PrivateRabbit, redis: PrivateRedis, passwords: dict[str, str]):
        self.rabbit, self.redis, self.passwords = rabbit, redis, passwords

    def amqp(self, user: str) -> str:
        return self.rabbit.url(user, self.passwords[amqp_password_var(user)])

    def redis_url(self, user: str) -> str:
        return self.redis.url(user, self.passwords[redis_password_var(user)])

    def env(self, user: str) -> dict[str, str]:
        return {"SASFLEET_AMQP_URL": self.amqp(user), "SASFLEET_REDIS_URL": self.redis_url(user)}


@pytest.fixture(scope="module")
def users(
    private_rabbitmq: PrivateRabbit, private_redis: PrivateRedis, passwords: dict[str, str]
) -> Users:
    return Users(private_rabbitmq, private_redis, passwords)


@pytest.fixture
async def admin_redis(users: Users) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(users.redis_url("admin"), decode_responses=True)
    try:
        yield connection
    finally:
        await connection.aclose()


METRICS_PORTS: dict[str, int] = {}  # service name -> its health endpoint's port


def start(fleet: LocalFleet, users: Users, role: str, *args: str) -> ServiceProcess:
    """Start a service with its own users' URLs (LocalFleet gives all one environment) and
    its health endpoint on a port of its own, as deployed."""
    port = free_port()
    fleet.env.update(users.env(role), SASFLEET_METRICS_PORT=str(port))
    service = fleet.start(role, *args, wait=False)
    METRICS_PORTS[service.name] = port
    return service


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def wait_ready(service: ServiceProcess) -> None:
    """Until the service's /readyz answers 200 (its Redis and RabbitMQ checks pass)."""
    port = METRICS_PORTS[service.name]
    for _ in range(200):
        if await asyncio.to_thread(http_status, port, "/readyz") == 200:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(http_status, port, "/readyz") == 200, service.name
    assert await asyncio.to_thread(http_status, port, "/healthz") == 200, service.name


def cli(users: Users, *args: str) -> Any:
    """``sasfleet ARGS --json`` as the client user; the decoded JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "sasfleet.cli", *args],
        env={**os.environ, **users.env("client"), "SASFLEET_PREFIX": PREFIX},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"sasfleet {' '.join(args)}: {done.stderr}"
    return msgspec.json.decode(done.stdout) if "--json" in args else done.stdout


async def wait_status(client: Client, job_id: str, statuses: set[str], timeout: float) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await client.get(job_id)
        if view is not None and view.status in statuses:
            return view.status
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"job {job_id} not in {statuses} after {timeout}s: {view}")
        await asyncio.sleep(0.05)


async def wait_claimed(client: Client, job_id: str, timeout: float = 20) -> None:
    """Until an agent has claimed the job's first step (its handler runs)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await client.get(job_id)
        if view is not None and view.steps and view.steps[0].status == "running":
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"job {job_id}'s step not claimed after {timeout}s: {view}")
        await asyncio.sleep(0.05)


async def test_every_service_runs_with_its_own_users(users: Users, admin_redis, tmp_path):
    await admin_redis.execute_command("ACL", "LOG", "RESET")
    settings: Settings = load_settings(
        amqp_url=users.amqp("client"),
        redis_url=users.redis_url("client"),
        prefix=PREFIX,
        **{k.removeprefix("SASFLEET_").lower(): v for k, v in FAST.items()},
    )
    fleet = LocalFleet(settings, env=dict(FAST), workdir=tmp_path, cwd=REPO)
    try:
        started = [
            start(fleet, users, "scheduler"),
            start(fleet, users, "supervisor"),
            start(fleet, users, "supervisor"),
            start(fleet, users, "agent", "sasfleet.examples.tasks", "--concurrency", "8"),
        ]
        for service in started:
            fleet.wait_ready(service, 60)
            # The probes of deploy/ pass with the restricted users.
            await wait_ready(service)
        agent = started[-1]

        async with Client(settings) as client:
            echo = await client.submit("echo", {"x": 1})
            retried = await client.submit(
                steps=order_job("o-1", flaky_step="charge_card", flaky_until=2)
            )
            compensated = await client.submit(steps=order_job("o-2", fail_step="ship"))
            escalated = await client.submit(
                steps=order_job(
                    "o-3",
                    fail_step="ship",
                    flaky_step="release_stock",
                    flaky_until=99,
                    max_attempts=2,
                )
            )
            delayed = await client.submit("echo", {"later": True}, delay_s=0.3)
            cancelled = await client.submit("sleep", {"seconds": 30})
            await wait_claimed(client, cancelled)
            assert await client.cancel(cancelled) == "requested"

            # An agent SIGKILLed mid-step: the supervisors recover the step (agent liveness
            # reads CLIENT LIST), another agent finishes it.
            survivor = await client.submit("sleep", {"seconds": 1.5})
            await wait_claimed(client, survivor)
            agent.kill()
            fleet.wait_ready(
                start(fleet, users, "agent", "sasfleet.examples.tasks", "--concurrency", "8"), 60
            )

            expected = {
                echo: "succeeded",
                retried: "succeeded",
                compensated: "compensated",
                escalated: "escalated",
                delayed: "succeeded",
                cancelled: "cancelled",
                survivor: "succeeded",
            }
            ended = {
                job: await wait_status(client, job, {want, "failed"}, 60)
                for job, want in expected.items()
            }
            assert ended == expected

            survivor_view = await client.get(survivor)
            assert survivor_view is not None
            assert any(h.by.startswith("supervisor-") for h in survivor_view.history)

        # The CLI, as the client user: reads, the agents list, schedules.
        shown = cli(users, "job", "show", compensated, "--json")
        assert shown["status"] == "compensated"
        assert {j["job_id"] for j in cli(users, "jobs", "--json")} >= set(expected)
        assert cli(users, "agents", "--json")
        cli(users, "schedule", "add", "yearly", "0 0 1 1 *", "echo")
        assert [s["schedule"]["name"] for s in cli(users, "schedule", "list", "--json")] == [
            "yearly"
        ]
        cli(users, "schedule", "remove", "yearly")

        # The escalation is reported (a supervisor reads the job document) and cleared.
        for _ in range(200):
            if await admin_redis.zcard(f"{PREFIX}:escalations") == 0:
                break
            await asyncio.sleep(0.05)
        assert await admin_redis.zcard(f"{PREFIX}:escalations") == 0
        # Nothing was refused anywhere.
        for service in fleet.processes:
            if service is not agent:
                assert service.alive(), f"{service.name} died:\n{service.log()[-3000:]}"
            log = service.log()
            refused = [
                line for line in log.splitlines() if any(e in line for e in PERMISSION_ERRORS)
            ]
            assert not refused, f"{service.name}: {refused[:5]}"
        assert await admin_redis.execute_command("ACL", "LOG") == []
    finally:
        fleet.stop_all(15)


# --------------------------------------------------------------------------- what they may not do


async def amqp_refused(url: str, operation: Any) -> bool:
    """Whether ``operation(channel)`` is refused by the broker (ACCESS_REFUSED)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await operation(channel)
        except (aiormq.exceptions.ChannelAccessRefused, aio_pika.exceptions.ChannelClosed) as exc:
            assert "ACCESS_REFUSED" in str(exc) or "403" in str(exc), exc
            return True
        return False
    finally:
        await connection.close()


def publish(exchange: str, routing_key: str) -> Any:
    async def run(channel: aio_pika.abc.AbstractChannel) -> None:
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)

    return run


def consume(queue: str) -> Any:
    async def run(channel: aio_pika.abc.AbstractChannel) -> None:
        declared = await channel.declare_queue(queue, passive=True)
        await declared.get(fail=False)

    return run


def declare(queue: str) -> Any:
    async def run(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})

    return run


async def test_amqp_users_hold_only_their_permissions(users: Users):
    pool = NAMES.pool("default")
    # The default exchange (direct to any queue) is the scheduler's, for replies, only.
    for user in ("agent", "supervisor", "client"):
        assert await amqp_refused(users.amqp(user), publish("", NAMES.submit)), user
    # Clients submit; they cannot take work from the pools or declare pool queues.
    assert await amqp_refused(users.amqp("client"), consume(pool))
    assert await amqp_refused(users.amqp("client"), declare(NAMES.pool("rogue")))
    # The dead-letter queue is read by operators (admin) only.
    for user in ("scheduler", "supervisor", "agent", "client"):
        assert await amqp_refused(users.amqp(user), consume(NAMES.dead)), user
    # Nobody but admin touches names outside the fleet's prefix.
    for user in ("scheduler", "supervisor", "agent", "client", "keda"):
        assert await amqp_refused(users.amqp(user), declare("other.queue")), user
    # KEDA reads queue lengths (a passive declare) and nothing else.
    connection = await aio_pika.connect(users.amqp("keda"))
    try:
        channel = await connection.channel()
        depth = await channel.declare_queue(pool, passive=True)
        assert depth.declaration_result.message_count is not None
    finally:
        await connection.close()
    assert await amqp_refused(users.amqp("keda"), consume(pool))
    assert await amqp_refused(users.amqp("keda"), publish(PREFIX, NAMES.submit))
    # No default guest user is created when the definitions are loaded at boot.
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(users.rabbit.url("guest", "guest"), timeout=10)


async def redis_refused(url: str, *command: Any) -> bool:
    connection = aioredis.Redis.from_url(url)
    try:
        await connection.execute_command(*command)
    except (redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError):
        return True
    except redis.exceptions.ResponseError as exc:
        return "NOPERM" in str(exc) or "NOAUTH" in str(exc)
    finally:
        await connection.aclose()
    return False


async def test_redis_users_hold_only_their_permissions(users: Users):
    anonymous = f"redis://127.0.0.1:{users.redis.port}/0"
    assert not await redis_refused(anonymous, "PING")
    assert await redis_refused(anonymous, "GET", f"{PREFIX}:jobs")
    service_users = ("scheduler", "supervisor", "agent", "client")
    for user in service_users:
        url = users.redis_url(user)
        assert not await redis_refused(url, "PING"), user
        assert not await redis_refused(url, "HGET", f"{PREFIX}:{{job}}:job", "status"), user
        # Other prefixes' keys, arbitrary Lua, and server administration are refused.
        assert await redis_refused(url, "HGET", "other:{job}:job", "status"), user
        assert await redis_refused(url, "EVAL", "return 1", "0"), user
        for command in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("MONITOR",)):
            assert await redis_refused(url, *command), (user, command)
        assert await redis_refused(url, "CLIENT", "KILL", "ID", "1"), user
        assert await redis_refused(url, "SUBSCRIBE", "x"), user
    # Only supervisors list connections (to see which agents are gone) and read the
    # server's uptime (no agent is connected just after a restart).
    for user in service_users:
        listed = not await redis_refused(users.redis_url(user), "CLIENT", "LIST")
        assert listed == (user == "supervisor"), user
        info = not await redis_refused(users.redis_url(user), "INFO", "server")
        assert info == (user == "supervisor"), user
    # Job ends are published to, and heard on, the fleet's notification channels only.
    notify = f"{PREFIX}:notify:client-1"
    listener = aioredis.Redis.from_url(users.redis_url("client"))
    try:
        pubsub = listener.pubsub()
        await pubsub.subscribe(notify)
        confirmed = await pubsub.get_message(timeout=5)
        assert confirmed is not None and confirmed["type"] == "subscribe"
        await pubsub.aclose()
    finally:
        await listener.aclose()
    assert not await redis_refused(users.redis_url("agent"), "PUBLISH", notify, "{}")
    assert await redis_refused(users.redis_url("agent"), "PUBLISH", "other:notify:x", "{}")
    # Clients read and cancel; they never delete (only agents and supervisors do).
    assert await redis_refused(users.redis_url("client"), "DEL", f"{PREFIX}:jobs")
    assert await redis_refused(users.redis_url("agent"), "HGETALL", f"{PREFIX}:{{job}}:job")
