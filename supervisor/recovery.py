"""Recovering one overdue step: re-dispatch it, or re-announce its recorded outcome."""

from __future__ import annotations

import logging
import time

from sasfleet.shared.amqp.fleet import FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import Announce, DispatchOrder
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope

log = logging.getLogger(__name__)

# The history entries a recovery writes, and the reasons recover.lua gives in them.
_RECOVERY_EVENTS = frozenset({"redispatch", "timeout_fail", "reannounce", "cancel", "republish"})
# Recoveries that repair a lost message rather than a failed step: their event is their kind,
# and their span is not an error.
_REPAIRS = frozenset({"reannounce", "republish"})
_REASONS = (
    ("schedule-to-close", "schedule_to_close_timeout"),
    ("start-to-close", "start_to_close_timeout"),
    ("lease expired", "lease_expired"),
    ("not claimed", "schedule_to_start_timeout"),
)


def recovery_kind(event: str, detail: str | None) -> str:
    """The kind of a recovery from its history entry (the `kind` label and span name)."""
    if event in _REPAIRS:
        return event
    if event == "cancel":
        return "cancelled"
    for prefix, kind in _REASONS:
        if (detail or "").startswith(prefix):
            return kind
    return "other"


class Recovery:
    """Applies what the store's atomic ``recover`` decided for one deadline."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        fleet: FleetChannel,
        reader: JobReader | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.reader = reader
        self.redispatched = 0
        self.announced = 0

    async def recover(self, job_id: str, step: int) -> None:
        """Recover one overdue step (claimed atomically: at most one supervisor does)."""
        with job_scope(job_id, step):
            await self._recover(job_id, step)

    async def _recover(self, job_id: str, step: int) -> None:
        s = self.settings
        started = time.time_ns()
        action = await self.store.recover(
            job_id,
            step,
            self.fleet.by,
            announce_after_ms=int(s.advance_grace_s * 1000),
        )
        if action is None:
            return
        kind, traceparent = await self._explain(job_id, step, action)
        if isinstance(action, DispatchOrder):
            what = "redispatch"
        else:
            what = "announce" if kind == "reannounce" else "fail"
        metrics.RECOVERIES.labels(kind, what).inc()
        if kind.endswith("_timeout"):
            metrics.TIMEOUTS.labels(kind.removesuffix("_timeout")).inc()
        # The recovery joins the job's trace; a step recovered for a timeout or a lost lease
        # is the job's error (a killed agent never exports its attempt's span).
        with tracing.job_span(
            f"recover {kind}",
            {
                **tracing.job_attributes(job_id, step, attempt=action.attempt),
                "sasfleet.recovery.kind": kind,
                "sasfleet.recovery.action": what,
            }
            if tracing.active()
            else {},
            traceparent=traceparent,
            start_ns=started,
        ) as span:
            if kind not in _REPAIRS:
                span.error(f"step {step} recovered: {kind}", error_type=kind)
            await self._apply(job_id, step, action)

    async def _apply(self, job_id: str, step: int, action: DispatchOrder | Announce) -> None:
        # If this process dies before the publish below, the deadline that the script just
        # moved comes due again and another round repairs it.
        if isinstance(action, DispatchOrder):
            # action.step: step + 1 when publishing the dispatch of an agent's advance
            self.redispatched += 1
            log.info(
                "re-dispatching %s step %d as attempt %d (lease %d)",
                job_id,
                action.step,
                action.attempt,
                action.lease,
                extra={"job_id": job_id, "step": action.step, "attempt": action.attempt},
            )
            await self.fleet.dispatch(action)
        else:
            self.announced += 1
            log.info(
                "announcing the recorded outcome of %s step %d",
                job_id,
                step,
                extra={"job_id": job_id, "step": step, "attempt": action.attempt},
            )
            await self.fleet.announce(job_id, step, action.attempt, action.lease)

    async def _explain(
        self, job_id: str, step: int, action: DispatchOrder | Announce
    ) -> tuple[str, str]:
        """Why the step was recovered, and the job's traceparent. The script's reply does
        not say why, so the history entry it just wrote is read, but only when metrics
        are served or traces recorded (recoveries are rare; the read is one job)."""
        traceparent = action.traceparent if isinstance(action, DispatchOrder) else ""
        if self.reader is None or not (metrics.exported() or tracing.active()):
            return "unknown", traceparent
        view = await self.reader.job(job_id)
        if view is None:
            return "unknown", traceparent
        recovered = action.step if isinstance(action, DispatchOrder) else step
        for entry in reversed(view.history):
            if (
                entry.step == recovered
                and entry.event in _RECOVERY_EVENTS
                and entry.by == self.fleet.by
                and entry.attempt in (action.attempt, None)
            ):
                return recovery_kind(entry.event, entry.detail), traceparent or (
                    view.traceparent or ""
                )
        return "unknown", traceparent or (view.traceparent or "")
