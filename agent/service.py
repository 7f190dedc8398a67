"""Agent wiring and lifecycle: connect, consume the pool's queue, heartbeat, drain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sasfleet.agent.heartbeat import Heartbeat
from sasfleet.agent.registry import Registry
from sasfleet.agent.runner import Runner
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready, retry_until_up
from sasfleet.shared.state.agents import AgentRegistry, agent_connection_prefix
from sasfleet.shared.state.connection import connect_redis
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry.health import Health, observed

log = logging.getLogger(__name__)


class AgentService:
    """Runs the handlers of ``registry`` for the steps of one pool."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        pool: str,
        concurrency: int,
        grace_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pool = pool
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.instance = instance_id(f"agent-{pool}")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        # Named connections let supervisors see at once when this process is gone.
        redis = connect_redis(
            s.redis_url.get_secret_value(), name=agent_connection_prefix(s.prefix) + self.instance
        )
        fleet = FleetChannel(
            s.amqp_url.get_secret_value(), s.prefix, self.instance, s.amqp_heartbeat_s
        )
        health = Health("agent", self.instance, ("redis", "amqp", "consuming"))

        async def redis_up() -> bool:
            return bool(await redis.ping())

        probes = {"redis": redis_up, "amqp": fleet.connected}
        async with observed(
            health, s.metrics_host, s.metrics_port, stop, probes, s.metrics_interval_s
        ):
            await self._run(stop, ready_file, redis, fleet, health)

    async def _run(
        self,
        stop: asyncio.Event,
        ready_file: str | None,
        redis: Any,
        fleet: FleetChannel,
        health: Health,
    ) -> None:
        s = self.settings
        await retry_until_up("redis", stop, redis.ping)
        health.set("redis", True)
        store = StateStore(redis, s.prefix)
        agents = AgentRegistry(redis, s.prefix)
        await retry_until_up("rabbitmq", stop, lambda: fleet.open(self.concurrency))
        health.set("amqp", True)
        runner = Runner(s, self.registry, store, fleet, self.concurrency)
        heartbeat = Heartbeat(
            runner, agents, self.pool, self.concurrency, min(s.heartbeat_s, s.lease_s / 3)
        )
        beating = asyncio.create_task(every(heartbeat.interval_s, stop, heartbeat.beat))
        try:
            await heartbeat.beat()
            consumers = [
                await fleet.consumer(fleet.names.pool(self.pool, "high"), runner.handle_high),
                await fleet.consumer(fleet.names.pool(self.pool), runner.handle),
            ]
            log.info(
                "agent %s consuming %s with %d slots (tasks: %s)",
                self.instance,
                fleet.names.pool(self.pool),
                self.concurrency,
                ", ".join(sorted(self.registry.tasks)),
            )
            health.set("consuming", True)
            mark_ready(ready_file)
            await stop.wait()
            health.set("consuming", False)  # draining: not ready for new work
            log.info("agent %s draining %d running steps", self.instance, len(runner.running))
            for consumer in consumers:
                await consumer.stop(grace_s=0)
            running = [r.task for r in runner.running.values() if r.task is not None]
            if running:
                await asyncio.wait(running, timeout=self.grace_s)
            if runner.running:
                released = await runner.release_all()
                log.info("agent %s handed %d unfinished steps back", self.instance, released)
        finally:
            beating.cancel()
            await agents.leave(self.instance)
            await fleet.close()
            await redis.aclose()
            runner.executor.shutdown(wait=False, cancel_futures=True)
