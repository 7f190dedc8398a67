"""Advancing jobs when a step's outcome is recorded: next step, retry timer, or the end."""

from __future__ import annotations

import logging

from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.codec import DECODE_ERRORS, any_decoder, error_decoder, event_decoder
from sasfleet.shared.messages.events import JobFinished
from sasfleet.shared.state.records import DispatchOrder, Finished
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.statemachine import JobStatus

log = logging.getLogger(__name__)


def job_finished(job_id: str, finished: Finished) -> JobFinished:
    """The reply message for a job that ended."""
    return JobFinished(
        job_id=job_id,
        status=finished.status,
        result=any_decoder.decode(finished.result) if finished.result else None,
        error=error_decoder.decode(finished.error) if finished.error else None,
    )


class Progress:
    """Handles deliveries from ``<prefix>.events``."""

    def __init__(self, settings: Settings, store: StateStore, fleet: FleetChannel) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.finished = 0

    async def handle(self, message: Delivery) -> Outcome:
        try:
            event = event_decoder.decode(message.body)
        except DECODE_ERRORS as exc:
            return DeadLetter(f"invalid step event: {exc}")
        if event.step < 0 or event.attempt < 0:
            return DeadLetter("invalid step event: negative step or attempt")
        await self.advance(event.job_id, event.step, event.lease)
        return Ack()

    async def advance(self, job_id: str, step: int, lease: int) -> None:
        """Take up the recorded outcome of ``step`` and publish what follows from it."""
        outcome = await self.store.advance(
            job_id, step, lease, self.fleet.by, ttl_s=self.settings.job_ttl_s
        )
        if isinstance(outcome, DispatchOrder):
            await self.fleet.dispatch(outcome)
        elif isinstance(outcome, Finished):
            self.finished += 1
            if outcome.status == JobStatus.ESCALATED:
                log.error(
                    "job %s escalated: a compensation could not finish",
                    job_id,
                    extra={"job_id": job_id},
                )
            await self.fleet.reply(
                outcome.reply_to, outcome.correlation_id, job_finished(job_id, outcome)
            )
        elif outcome is None:
            log.debug(
                "stale or duplicate event for %s step %d",
                job_id,
                step,
                extra={"job_id": job_id, "step": step},
            )
