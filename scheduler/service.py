"""Scheduler wiring and lifecycle: connect, declare, consume submissions and events, drain."""

from __future__ import annotations

import asyncio
import logging

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

log = logging.getLogger(__name__)


class SchedulerService:
    """Accepts jobs from ``<prefix>.submit`` and advances them on ``<prefix>.events``."""

    def __init__(self, settings: Settings, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or instance_id("scheduler")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        redis = connect_redis(s.redis_url.get_secret_value())
        await retry_until_up("redis", stop, redis.ping)
        store = StateStore(redis, s.prefix)
        fleet = FleetChannel(s.amqp_url.get_secret_value(), s.prefix, self.instance)
        await retry_until_up("rabbitmq", stop, lambda: fleet.open(s.scheduler_prefetch))
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
            mark_ready(ready_file)
            await stop.wait()
            await ticking
            log.info("scheduler %s stopping", self.instance)
            for consumer in consumers:
                await consumer.stop()
        finally:
            await fleet.close()
            await redis.aclose()
