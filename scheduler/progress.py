"""Advancing jobs when a step's outcome is recorded: next step, retry timer, or the end."""

from __future__ import annotations

import logging
from collections import OrderedDict

from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.messages.codec import DECODE_ERRORS, event_decoder
from sasfleet.shared.state.records import DispatchOrder, Finished
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.statemachine import JobStatus
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope

log = logging.getLogger(__name__)

# Recently counted job ends and compensation starts: a duplicate announcement (a redelivery,
# or the supervisor's re-announce racing the agent's) returns the same outcome again, and
# must not be counted twice by this scheduler.
_REMEMBER = 20_000


class Progress:
    """Handles deliveries from ``<prefix>.events``."""

    def __init__(self, settings: Settings, store: StateStore, fleet: FleetChannel) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.finished = 0
        self._counted: OrderedDict[tuple[str, int], None] = OrderedDict()

    def _first(self, job_id: str, step: int) -> bool:
        """True the first time this scheduler sees (job, step) here (-1: the job's end)."""
        key = (job_id, step)
        if key in self._counted:
            return False
        self._counted[key] = None
        if len(self._counted) > _REMEMBER:
            self._counted.popitem(last=False)
        return True

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
        outcome = await self.store.advance(
            job_id, step, lease, self.fleet.by, ttl_s=self.settings.job_ttl_s
        )
        if isinstance(outcome, DispatchOrder):
            if (
                outcome.compensates is not None
                and outcome.attempt == 1
                and self._first(job_id, outcome.step)
            ):
                metrics.COMPENSATIONS.labels(outcome.task).inc()
            await self.fleet.dispatch(outcome)
        elif isinstance(outcome, Finished):
            self.finished += 1
            if self._first(job_id, -1):
                metrics.JOBS_FINISHED.labels(outcome.status).inc()
            span = tracing.current()
            span.set({tracing.JOB_STATUS: outcome.status})
            span.event("job finished", {tracing.JOB_STATUS: outcome.status})
            if outcome.status == JobStatus.ESCALATED:
                log.error(
                    "job %s escalated: a compensation could not finish",
                    job_id,
                    extra={"job_id": job_id},
                )
            await self.fleet.reply(
                outcome.reply_to, outcome.correlation_id, outcome.message(job_id)
            )
        elif outcome is None:
            log.debug(
                "stale or duplicate event for %s step %d",
                job_id,
                step,
                extra={"job_id": job_id, "step": step},
            )
