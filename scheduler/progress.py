"""Advancing jobs when an agent (or a client's cancel) announces a recorded outcome."""

from __future__ import annotations

import logging

from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.followups import Followups
from sasfleet.shared.messages.codec import DECODE_ERRORS, event_decoder
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry.logs import job_scope

log = logging.getLogger(__name__)


class Progress:
    """Handles deliveries from ``<prefix>.events``: takes up the outcome (the store's
    ``advance``) and carries out what follows it."""

    def __init__(self, store: StateStore, followups: Followups, by: str) -> None:
        self.store = store
        self.followups = followups
        self.by = by

    async def handle(self, message: Delivery) -> Outcome:
        try:
            event = event_decoder.decode(message.body)
        except DECODE_ERRORS as exc:
            return DeadLetter(f"invalid step event: {exc}")
        if event.step < 0 or event.attempt < 0:
            return DeadLetter("invalid step event: negative step or attempt")
        with job_scope(event.job_id, event.step, attempt=event.attempt, lease=event.lease):
            await self.advance(event.job_id, event.step, event.lease)
        return Ack()

    async def advance(self, job_id: str, step: int, lease: int) -> None:
        """Take up the recorded outcome of ``step`` and publish what follows from it."""
        follow = await self.store.advance(job_id, step, lease, self.by)
        await self.followups.carry_out(job_id, follow)
