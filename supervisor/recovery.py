"""Recovering one overdue step: re-dispatch it, or re-announce its recorded outcome."""

from __future__ import annotations

import logging

from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.state.records import Announce, DispatchOrder
from sasfleet.shared.state.store import StateStore

log = logging.getLogger(__name__)


class Recovery:
    """Applies what the store's atomic ``recover`` decided for one deadline."""

    def __init__(self, settings: Settings, store: StateStore, fleet: FleetChannel) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.redispatched = 0
        self.announced = 0

    async def recover(self, job_id: str, step: int) -> None:
        s = self.settings
        action = await self.store.recover(
            job_id,
            step,
            self.fleet.by,
            announce_after_ms=int(s.advance_grace_s * 1000),
        )
        # If this process dies before the publish below, the deadline that the script just
        # moved comes due again and another round repairs it.
        if isinstance(action, DispatchOrder):
            self.redispatched += 1
            log.info(
                "re-dispatching %s step %d as attempt %d (lease %d)",
                job_id,
                step,
                action.attempt,
                action.lease,
                extra={"job_id": job_id, "step": step, "attempt": action.attempt},
            )
            await self.fleet.dispatch(action)
        elif isinstance(action, Announce):
            self.announced += 1
            log.info(
                "announcing the recorded outcome of %s step %d",
                job_id,
                step,
                extra={"job_id": job_id, "step": step, "attempt": action.attempt},
            )
            await self.fleet.announce(job_id, step, action.attempt, action.lease)
