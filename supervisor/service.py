"""Supervisor wiring and lifecycle: connect, scan deadlines every tick, stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready, retry_until_up
from sasfleet.shared.state.agents import AgentRegistry
from sasfleet.shared.state.connection import connect_redis
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry.health import Health, observed
from sasfleet.supervisor.escalation import Escalations
from sasfleet.supervisor.liveness import Liveness
from sasfleet.supervisor.recovery import Recovery
from sasfleet.supervisor.scan import DeadlineScan

log = logging.getLogger(__name__)


class SupervisorService:
    """Watches step deadlines and recovers overdue steps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_id("supervisor")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        redis = connect_redis(s.redis_url.get_secret_value())
        fleet = FleetChannel(s.amqp_url.get_secret_value(), s.prefix, self.instance)
        health = Health("supervisor", self.instance, ("redis", "amqp", "scanning"))

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
        await retry_until_up("rabbitmq", stop, lambda: fleet.open(1))
        health.set("amqp", True)
        try:
            reader = JobReader(redis, s.prefix)
            scan = DeadlineScan(store, Recovery(s, store, fleet, reader), s.scan_batch)
            log.info("supervisor %s scanning every %.2fs", self.instance, s.supervisor_tick_s)
            escalations = Escalations(store, reader, s.escalation_webhook, self.instance)
            health.set("scanning", True)
            mark_ready(ready_file)
            liveness = Liveness(
                AgentRegistry(redis, s.prefix), store, int(s.agent_timeout_s * 1000)
            )

            async def tick() -> bool:
                try:
                    await liveness.tick()  # dead agents' steps become due in this same tick
                except Exception:
                    log.exception("agent liveness check failed; leases still expire")
                return await scan.tick()

            await asyncio.gather(
                every(s.supervisor_tick_s, stop, tick),
                every(1.0, stop, escalations.tick),
            )
        finally:
            await fleet.close()
            await redis.aclose()
