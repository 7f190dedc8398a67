"""Scheduler wiring and lifecycle: connect, declare, consume submissions and events, drain."""

from __future__ import annotations

import asyncio
import functools
import logging

from sasfleet.scheduler.intake import Intake
from sasfleet.scheduler.progress import Progress
from sasfleet.scheduler.timers import Timers
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.connections import connected
from sasfleet.shared.followups import Followups
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready
from sasfleet.shared.state.schedules import Schedules
from sasfleet.shared.telemetry import metrics

log = logging.getLogger(__name__)


class SchedulerService:
    """Accepts jobs from ``<prefix>.submit`` and advances them on ``<prefix>.events``."""

    def __init__(self, settings: Settings, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or instance_id("scheduler")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        async with connected(
            s,
            "scheduler",
            self.instance,
            stop,
            prefetch=s.scheduler_prefetch,
            checks=("consuming",),
            sample=functools.partial(sample_queue_depths, default_pool=s.default_pool),
        ) as c:
            store, fleet = c.store, c.fleet
            followups = Followups(fleet)
            intake = Intake(s, store, fleet, followups, self.instance)
            progress = Progress(store, followups, self.instance)
            consumers = [
                await c.consumer(fleet.names.submit, intake.handle),
                await c.consumer(fleet.names.events, progress.handle),
            ]
            log.info(
                "scheduler %s consuming %s and %s",
                self.instance,
                fleet.names.submit,
                fleet.names.events,
            )
            timers = Timers(s, store, followups, self.instance, intake, Schedules(store))
            ticking = asyncio.create_task(every(s.timer_tick_s, stop, timers.tick))
            c.health.set("consuming", True)
            mark_ready(ready_file)
            await stop.wait()
            c.health.set("consuming", False)
            await ticking
            log.info("scheduler %s stopping", self.instance)
            for consumer in consumers:
                await consumer.stop()


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
    for queue, (messages, consumers) in (await fleet.monitor.depths(sorted(names))).items():
        metrics.QUEUE_MESSAGES.labels(queue).set(messages)
        metrics.QUEUE_CONSUMERS.labels(queue).set(consumers)
