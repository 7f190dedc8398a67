"""Supervisor wiring and lifecycle: connect, scan deadlines every tick, stop."""

from __future__ import annotations

import asyncio
import logging

from sasfleet.shared.config import Settings
from sasfleet.shared.connections import connected
from sasfleet.shared.followups import Followups
from sasfleet.shared.ids import instance_id
from sasfleet.shared.runtime import every, mark_ready
from sasfleet.supervisor.escalation import Escalations
from sasfleet.supervisor.liveness import Liveness
from sasfleet.supervisor.recovery import Recovery
from sasfleet.supervisor.scan import DeadlineScan

log = logging.getLogger(__name__)


class SupervisorService:
    """Watches step deadlines and agents, recovers overdue steps, reports escalations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = instance_id("supervisor")

    async def run(self, stop: asyncio.Event, ready_file: str | None = None) -> None:
        s = self.settings
        async with connected(
            s, "supervisor", self.instance, stop, prefetch=1, checks=("scanning",)
        ) as c:
            store = c.store
            reader = store.reader
            recovery = Recovery(store, Followups(c.fleet), self.instance)
            scan = DeadlineScan(store, recovery, s.scan_batch)
            escalations = Escalations(store, reader, s.escalation_webhook, self.instance)
            liveness = Liveness(store.agents, store, int(s.agent_timeout_s * 1000))

            async def tick() -> bool:
                try:
                    await liveness.tick()  # dead agents' steps become due in this same tick
                except Exception:
                    log.exception("agent liveness check failed; leases still expire")
                return await scan.tick()

            log.info("supervisor %s scanning every %.2fs", self.instance, s.supervisor_tick_s)
            c.health.set("scanning", True)
            mark_ready(ready_file)
            await asyncio.gather(
                every(s.supervisor_tick_s, stop, tick),
                every(1.0, stop, escalations.tick),
            )
