"""Carrying out what follows an outcome, as the state scripts decided it (_lib.lua's
``follow``): publish the dispatch, reply to the submitter, count what happened. Agents,
schedulers and supervisors all go through here, so a job's end is counted once, by whoever
ended it (the script says whether this call did)."""

from __future__ import annotations

import logging

from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.state.records import Finished, FollowUp, RetryLater
from sasfleet.shared.statemachine import JobStatus
from sasfleet.shared.telemetry import metrics, tracing

log = logging.getLogger(__name__)


class Followups:
    """Publishes what follows an outcome through ``fleet``."""

    def __init__(self, fleet: FleetChannel) -> None:
        self.fleet = fleet

    async def carry_out(self, job_id: str, follow: FollowUp, traceparent: str = "") -> None:
        """Publish ``follow`` (a dispatch: joining ``traceparent``, default the job's) or
        reply with the job's end; a retry timer and a stale call need nothing."""
        if isinstance(follow, DispatchOrder):
            if follow.compensates is not None and follow.attempt == 1 and not follow.again:
                metrics.COMPENSATIONS.labels(follow.task).inc()
            await self.fleet.dispatch(follow, traceparent)
        elif isinstance(follow, Finished):
            await self.finished(job_id, follow)
        elif isinstance(follow, RetryLater):
            log.debug("%s waits to retry until %d", job_id, follow.due, extra={"job_id": job_id})
        else:
            log.debug("nothing follows for %s: %s", job_id, follow.why, extra={"job_id": job_id})

    async def finished(self, job_id: str, end: Finished) -> None:
        """Count a job's end (when this call ended it) and tell its submitter."""
        span = tracing.current()
        span.set({tracing.JOB_STATUS: end.status})
        if end.ended:
            metrics.JOBS_FINISHED.labels(end.status).inc()
            span.event("job finished", {tracing.JOB_STATUS: end.status})
            if end.status == JobStatus.ESCALATED:
                log.error(
                    "job %s escalated: a compensation could not finish",
                    job_id,
                    extra={"job_id": job_id},
                )
        # The reply only saves the submitter a poll: the end is in Redis already. A
        # duplicate answers again: the first reply may have been lost with its publisher.
        await self.fleet.reply(end.reply_to, end.correlation_id, end.message(job_id))
