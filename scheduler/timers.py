"""Firing timers: retries whose backoff ran out and delayed starts (from Redis, so a
restart loses none); and periodic (cron) schedules."""

from __future__ import annotations

import asyncio
import logging
import time

from sasfleet.scheduler.intake import Intake
from sasfleet.shared.config import Settings
from sasfleet.shared.cron import next_tick_ms
from sasfleet.shared.followups import Followups
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.schedule import Schedule
from sasfleet.shared.state.keys import parse_deadline_member
from sasfleet.shared.state.schedules import Schedules
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope

log = logging.getLogger(__name__)


class Timers:
    """Each tick, take the due timers; each is claimed atomically by the store, so several
    schedulers never fire one twice."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        followups: Followups,
        by: str,
        intake: Intake,
        schedules: Schedules,
    ) -> None:
        self.settings = settings
        self.store = store
        self.followups = followups
        self.by = by
        self.intake = intake
        self.schedules = schedules

    async def tick(self) -> bool:
        """One scan; True when the batch was full (more may be due: scan again at once)."""
        due = await self.store.timers_due(self.settings.scan_batch)
        if due:
            await asyncio.gather(*(self._fire(member) for member in due))
        for schedule, tick in await self.schedules.due(self.store.clock.now_ms(), 50):
            try:
                await self._fire_schedule(schedule, tick)
            except Exception:
                log.exception("firing schedule %s failed; retrying next round", schedule.name)
        return len(due) == self.settings.scan_batch

    async def _fire(self, member: str) -> None:
        try:
            job_id, step = parse_deadline_member(member)
        except ValueError:
            log.error("ignoring a malformed timer %r", member)
            return
        try:
            with job_scope(job_id, step):
                await self._fire_one(job_id, step)
        except Exception:
            # Nothing is lost: a dispatch that failed to publish is recovered by the
            # supervisor's deadline, an outcome left unannounced by its re-announce.
            log.exception("firing timer %s failed", member, extra={"job_id": job_id})

    async def _fire_one(self, job_id: str, step: int) -> None:
        started = time.time_ns() if tracing.active() else None
        fired = await self.store.fire_timer(job_id, step, self.by)
        if fired is None:
            return
        if fired.failure is not None:  # a retry due past the step's schedule-to-close
            metrics.count_timeout(fired.failure)
        action = fired.next
        if not isinstance(action, DispatchOrder):
            await self.followups.carry_out(job_id, action)
            return
        retry = action.attempt > 1  # else a delayed job's first step
        if retry:
            metrics.RETRIES.labels(action.task).inc()
        # The timer's span joins the job's trace through its stored traceparent; it starts
        # when the timer was claimed, and the dispatch's publish nests under it.
        with tracing.job_span(
            f"{'retry' if retry else 'start'} {action.task}",
            tracing.job_attributes(
                job_id, step, task=action.task, attempt=action.attempt, lease=action.lease
            )
            if started
            else {},
            traceparent=action.traceparent,
            start_ns=started,
        ):
            await self.followups.carry_out(job_id, action)

    async def _fire_schedule(self, schedule: Schedule, tick: int) -> None:
        """Create this tick's job, then move the schedule on. The job id is the tick's, so
        a scheduler that dies between the two, or a second scheduler, creates it once."""
        job_id = f"cron-{schedule.name}-{tick}"
        # A tick's job starts its own trace here.
        with tracing.job_span(
            f"schedule {schedule.name}",
            {tracing.JOB_ID: job_id, "sasfleet.schedule.name": schedule.name},
        ) as span:
            await self.intake.accept(
                schedule.job, schedule.job.step_specs(), job_id, traceparent=span.traceparent
            )
        later = next_tick_ms(schedule.cron, max(tick, self.store.clock.now_ms()))
        if await self.schedules.advance(schedule.name, tick, later):
            log.info(
                "schedule %s fired job %s; next tick at %d",
                schedule.name,
                job_id,
                later,
                extra={"job_id": job_id},
            )
