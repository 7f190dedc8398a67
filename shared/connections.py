"""What every service connects to: Redis, RabbitMQ, and its health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sasfleet.shared.amqp.consumer import Consumer, Handler
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.runtime import retry_until_up
from sasfleet.shared.state.connection import redis_for
from sasfleet.shared.state.store import StateStore, StoreTimings
from sasfleet.shared.telemetry.health import Health, observed


@dataclass(frozen=True, slots=True)
class Connections:
    """A service's connected store, broker channel and health record."""

    store: StateStore
    fleet: FleetChannel
    health: Health
    stop: asyncio.Event

    async def consumer(self, queue: str, handler: Handler) -> Consumer:
        """A started consumer of ``queue``. A broker error while it starts is waited out
        like an outage, not a crash: RabbitMQ 3.10 closes the whole connection with
        INTERNAL_ERROR when a quorum queue that another process has just declared is
        consumed before its Raft member runs (agents starting beside a dispatching
        scheduler). The robust connection reconnects and restores the consumers already
        started; this one is tried again."""
        return await retry_until_up(
            f"rabbitmq (consuming {queue})", self.stop, lambda: self.fleet.consumer(queue, handler)
        )


@contextlib.asynccontextmanager
async def connected(
    settings: Settings,
    role: str,
    instance: str,
    stop: asyncio.Event,
    *,
    prefetch: int,
    checks: tuple[str, ...] = (),
    redis_name: str | None = None,
    amqp_heartbeat_s: int = 10,
    sample: Callable[[FleetChannel], Awaitable[None]] | None = None,
) -> AsyncIterator[Connections]:
    """Connect (waiting for Redis and RabbitMQ as long as they are down, rather than
    crash-looping), serve /metrics, /healthz and /readyz while the block runs, and close
    everything after it. ``checks`` name the service's own readiness conditions."""
    s = settings
    redis = redis_for(s, name=redis_name)
    fleet = FleetChannel(s.amqp_url.get_secret_value(), s.prefix, instance, amqp_heartbeat_s)
    health = Health(role, instance, ("redis", "amqp", *checks))

    async def redis_up() -> bool:
        return bool(await redis.ping())

    async def sampled() -> None:
        if sample is not None:
            await sample(fleet)

    probes = {"redis": redis_up, "amqp": fleet.connected}
    try:
        async with observed(
            health,
            s.metrics_host,
            s.metrics_port,
            stop,
            probes,
            s.metrics_interval_s,
            sampled if sample is not None else None,
        ):
            await retry_until_up("redis", stop, redis.ping)
            health.set("redis", True)
            await retry_until_up("rabbitmq", stop, lambda: fleet.open(prefetch))
            health.set("amqp", True)
            yield Connections(
                StateStore(redis, s.prefix, timings=StoreTimings.of(s)), fleet, health, stop
            )
    finally:
        await fleet.close()
        await redis.aclose()
