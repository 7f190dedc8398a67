"""Recovering one overdue step: the store's atomic ``recover`` fails it (a timeout, a lost
agent) and decides what follows, or follows up an outcome no one took up; this publishes it."""

from __future__ import annotations

import logging
import time

from sasfleet.shared.followups import Followups
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.state.records import Recovered
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.statemachine import Failure
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope

log = logging.getLogger(__name__)

# The `kind` of a recovery that followed up a recorded outcome or repaired a publish.
REPAIR = "repair"


def recovery_kind(recovered: Recovered) -> str:
    """The ``kind`` label and span name of a recovery: its failure's label, or repair."""
    failure = Failure.of(recovered.failure or "")
    if recovered.repair or failure is None:
        return REPAIR
    return failure.label


class Recovery:
    """Carries out what the store's atomic ``recover`` decided for one deadline."""

    def __init__(self, store: StateStore, followups: Followups, by: str) -> None:
        self.store = store
        self.followups = followups
        self.by = by

    async def recover(self, job_id: str, step: int) -> None:
        """Recover one overdue step (claimed atomically: at most one supervisor does)."""
        with job_scope(job_id, step):
            await self._recover(job_id, step)

    async def _recover(self, job_id: str, step: int) -> None:
        started = time.time_ns()
        recovered = await self.store.recover(job_id, step, self.by)
        if recovered is None:
            return
        kind, follow = recovery_kind(recovered), recovered.next
        action = str(follow.__struct_config__.tag)  # what followed: dispatch, finished...
        metrics.RECOVERIES.labels(kind, action).inc()
        if recovered.failure is not None:
            metrics.count_timeout(recovered.failure)
        log.info(
            "recovered %s step %d (%s): %s follows",
            job_id,
            step,
            kind,
            action,
            extra={"job_id": job_id, "step": step},
        )
        # The recovery joins the job's trace; a step recovered for a timeout or a lost lease
        # is the job's error (a killed agent never exports its attempt's span).
        order = follow if isinstance(follow, DispatchOrder) else None
        with tracing.job_span(
            f"recover {kind}",
            {
                **tracing.job_attributes(job_id, step, attempt=order.attempt if order else None),
                "sasfleet.recovery.kind": kind,
                "sasfleet.recovery.action": action,
            }
            if tracing.active()
            else {},
            traceparent=await self._traceparent(job_id, order),
            start_ns=started,
        ) as span:
            if kind != REPAIR:
                span.error(f"step {step} recovered: {kind}", error_type=kind)
            # If this process dies before the publish, the deadline that the script just
            # moved comes due again and another round repairs it.
            await self.followups.carry_out(job_id, follow)

    async def _traceparent(self, job_id: str, order: DispatchOrder | None) -> str:
        """The job's trace context: the order carries it; else it is read, but only when
        traces are recorded (recoveries are rare)."""
        if order is not None:
            return order.traceparent
        if not tracing.active():
            return ""
        return await self.store.traceparent(job_id)
