"""Scheduler wiring and lifecycle: connect, declare, consume submissions and events, drain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sasfleet.scheduler.intake import Intake
from sasfleet.scheduler.progress import Progress
from sasfleet.scheduler.timers import Timers
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready, retry_until_up
from sasfleet.shared.state.connection import connect_redis
from sasfleet.shared.state.schedules import Schedules
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry import metrics
from sasfleet.shared.telemetry.health import Health, observed

log = logging.getLogger(__name__)


class SchedulerService:
    """Accepts jobs from ``<prefix>.submit`` and advances them on ``<prefix>.events``."""

    def __init__(self, settings: Settings, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or instance_id("scheduler")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        redis = connect_redis(s.redis_url.get_secret_value())
        fleet = FleetChannel(s.amqp_url.get_secret_value(), s.prefix, self.instance)
        health = Health("scheduler", self.instance, ("redis", "amqp", "consuming"))

        async def redis_up() -> bool:
            return bool(await redis.ping())

        async def sample_queues() -> None:
            await sample_queue_depths(fleet, s.default_pool)

        probes = {"redis": redis_up, "amqp": fleet.connected}

        async with observed(
            health,
            s.metrics_host,
            s.metrics_port,
            stop,
            probes,
            s.metrics_interval_s,
            sample_queues,
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
        await retry_until_up("rabbitmq", stop, lambda: fleet.open(s.scheduler_prefetch))
        health.set("amqp", True)
        try:
            intake = Intake(s, store, fleet)
            progress = Progress(s, store, fleet)
            consumers = [
                await fleet.consumer(fleet.names.submit, intake.handle),
                await fleet.consumer(fleet.names.events, progress.handle),
            ]
            log.info(
                "scheduler %s consuming %s and %s",
                self.instance,
                fleet.names.submit,
                fleet.names.events,
            )
            timers = Timers(s, store, fleet, progress, intake, Schedules(redis, s.prefix))
            ticking = asyncio.create_task(every(s.timer_tick_s, stop, timers.tick))
            health.set("consuming", True)
            mark_ready(ready_file)
            await stop.wait()
            health.set("consuming", False)
            await ticking
            log.info("scheduler %s stopping", self.instance)
            for consumer in consumers:
                await consumer.stop()
        finally:
            await fleet.close_monitor()
            await fleet.close()
            await redis.aclose()


async def sample_queue_depths(fleet: FleetChannel, default_pool: str) -> None:
    """Set the queue gauges for the fleet's queues this scheduler knows: submit, events, the
    dead-letter queue, the default pool's queues and every pool queue it dispatched to."""
    n = fleet.names
    names = {
        n.submit,
        n.events,
        n.dead,
        n.pool(default_pool),
        n.pool(default_pool, "high"),
        *fleet.dispatched_queues,
    }
    for queue, (messages, consumers) in (await fleet.queue_depths(sorted(names))).items():
        metrics.QUEUE_MESSAGES.labels(queue).set(messages)
        metrics.QUEUE_CONSUMERS.labels(queue).set(consumers)
