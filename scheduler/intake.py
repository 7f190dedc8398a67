"""Accepting submissions: validate, de-duplicate, record, dispatch the first step."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.amqp.fleet import NOTIFY_HEADER, TRACEPARENT, FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.followups import Followups
from sasfleet.shared.ids import is_valid_job_id, submitted_job_id
from sasfleet.shared.messages.codec import (
    DECODE_ERRORS,
    any_decoder,
    batch_decoder,
    kind_decoder,
    submit_decoder,
)
from sasfleet.shared.messages.events import ErrorInfo, JobFinished
from sasfleet.shared.messages.submit import StepSpec, SubmitJob
from sasfleet.shared.state.store import CreateResult, NewJob, StateStore, step_record
from sasfleet.shared.statemachine import Failure, StepStatus
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope
from sasfleet.shared.telemetry.traceparent import is_valid as valid_traceparent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Submission:
    """What every job of one submit message shares: where to tell its end, its trace."""

    reply_to: str
    correlation_id: str | None  # None: each job's own id (a batch's jobs)
    traceparent: str
    notify: str


class Intake:
    """Handles deliveries from ``<prefix>.submit``."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        fleet: FleetChannel,
        followups: Followups,
        by: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.followups = followups
        self.by = by
        self.step_defaults = settings.step_defaults()
        self.fleet_policy = settings.retry_policy()
        # Jobs being created and dispatched at once: a backlog of batch messages (each up
        # to 1,000 jobs) is then worked through a slice at a time, so dispatches flow to
        # the agents from the first moment instead of after the whole backlog is created.
        self._accepting = asyncio.Semaphore(settings.scheduler_prefetch)

    async def handle(self, message: Delivery) -> Outcome:
        """A submission (a batch of one) or a batch: each job is accepted or refused on its
        own; a message whose every job is refused is dead-lettered with the reason."""
        body = message.body
        if len(body) > self.settings.max_payload_bytes:
            return await self._reject(
                message,
                f"message of {len(body)} bytes exceeds the payload limit of "
                f"{self.settings.max_payload_bytes} bytes",
                _valid(message.message_id),
                kind="too_large",
            )
        try:
            kind = kind_decoder.decode(body).kind
        except DECODE_ERRORS:
            kind = "submit"  # decoding it as a submission says what is wrong with it
        batch = kind == "submit_batch"
        try:
            bodies = batch_decoder.decode(body).jobs if batch else [msgspec.Raw(body)]
        except DECODE_ERRORS as exc:  # its jobs have no ids to record them under
            return await self._reject(message, f"invalid submission batch: {exc}", None)
        jobs = [_decoded(raw) for raw in bodies]
        if not batch and isinstance(jobs[0], _Invalid):
            # The job it names: its `job_id` field, else the message_id.
            named = jobs[0].job_id or _valid(message.message_id)
            return await self._reject(message, jobs[0].reason, named)
        ids = [
            submitted_job_id(
                job.job_id, job.idempotency_key, message.message_id, i if batch else None
            )
            for i, job in enumerate(jobs)
        ]
        if None in ids:
            reason = f"message_id is not a valid job id{' prefix for a batch' if batch else ''}"
            return await self._reject(message, reason, None)
        submission = _Submission(
            reply_to=message.reply_to or "",
            # Replies to a batch's jobs carry the job id as correlation id.
            correlation_id=None if batch else message.correlation_id or "",
            traceparent=job_traceparent(message),
            notify=self._notify_channel(message),
        )
        # Every job is recorded and dispatched (or refused) before the message is acked; a
        # message redelivered after a crash finds its jobs by id and creates none twice.
        refusals = await asyncio.gather(
            *(
                self._accept_one(job, str(job_id), submission)
                for job, job_id in zip(jobs, ids, strict=True)
            )
        )
        if all(refusals):
            return DeadLetter(
                f"every job of the batch refused: {refusals[0]}" if batch else refusals[0]
            )
        return Ack()

    async def _accept_one(self, submit: SubmitJob | _Invalid, job_id: str, via: _Submission) -> str:
        """Accept one job of a message (or refuse it, with the reason it could not be
        decoded); the reason it was refused, "" when it was not."""
        correlation_id = job_id if via.correlation_id is None else via.correlation_id
        async with self._accepting:
            with job_scope(job_id):
                try:
                    if isinstance(submit, _Invalid):
                        raise ValueError(submit.reason)
                    steps = submit.step_specs()
                except ValueError as exc:
                    reason = str(exc)
                    if not isinstance(submit, _Invalid):
                        reason = f"invalid submission: {reason}"
                    metrics.JOBS_REJECTED.inc()
                    log.warning("refused job %s: %s", job_id, reason, extra={"job_id": job_id})
                    error = ErrorInfo(
                        type=Failure.INVALID_SUBMISSION, message=reason, retryable=False
                    )
                    await self._refuse(job_id, error, via.reply_to, correlation_id)
                    return reason
                created = await self.accept(
                    submit,
                    steps,
                    job_id,
                    reply_to=via.reply_to,
                    correlation_id=correlation_id,
                    traceparent=via.traceparent,
                    notify=via.notify,
                )
                if created.order is None and created.ended is None:
                    # A duplicate, or a delayed start: answer if the job has ended.
                    await self._reply_if_finished(job_id, via.reply_to, correlation_id)
                return ""

    async def accept(
        self,
        submit: SubmitJob,
        steps: list[StepSpec],
        job_id: str,
        *,
        reply_to: str = "",
        correlation_id: str = "",
        traceparent: str = "",
        notify: str = "",
    ) -> CreateResult:
        """Record a valid job and publish its first dispatch (idempotent by job id)."""
        job = NewJob(
            job_id=job_id,
            steps=[step_record(spec, self.step_defaults, self.fleet_policy) for spec in steps],
            idempotency_key=submit.idempotency_key or "",
            reply_to=reply_to,
            correlation_id=correlation_id,
            traceparent=traceparent,
            notify=notify,
            start_at_ms=self._start_at(submit),
        )
        created = await self.store.create_job(job, self.by)
        if created.created:
            metrics.JOBS_SUBMITTED.inc()
        if created.ended is not None:  # cancelled before it was recorded
            await self.followups.finished(job_id, created.ended)
            return created
        if created.order is None:
            if created.start_at_ms:
                log.info(
                    "job %s starts at %d ms", job_id, created.start_at_ms, extra={"job_id": job_id}
                )
            return created
        if created.created or (
            created.step_status == StepStatus.DISPATCHED and created.order.attempt == 1
        ):
            # For a repeated submission the first dispatch may never have been published.
            # Publishing it again is safe: only one delivery can claim the lease.
            await self.followups.carry_out(job_id, created.order, traceparent)
            return created
        log.info(
            "duplicate submission of job %s (%s)",
            job_id,
            created.job_status,
            extra={"job_id": job_id},
        )
        return dataclasses.replace(created, order=None)

    def _notify_channel(self, message: Delivery) -> str:
        """The submitter's notification channel; only this fleet's channels are told."""
        channel = message.header(NOTIFY_HEADER)
        return channel if channel.startswith(self.store.keys.notify_prefix) else ""

    def _start_at(self, submit: SubmitJob) -> int:
        now = self.store.clock.now_ms()
        delay = submit.start_delay_ms(now)
        return now + delay if delay > 0 else 0

    async def _reply_if_finished(self, job_id: str, reply_to: str, correlation_id: str) -> None:
        if reply_to:
            finished = await self.store.finished(job_id)
            if finished is not None:
                await self.fleet.reply(reply_to, correlation_id, finished.message(job_id))

    async def _reject(
        self, message: Delivery, reason: str, job_id: str | None, *, kind: str = "invalid"
    ) -> Outcome:
        """Dead-letter a message; the job it names (``job_id``) is recorded FAILED."""
        metrics.JOBS_REJECTED.inc()
        if job_id is not None:
            tracing.annotate(tracing.job_attributes(job_id))
        error = ErrorInfo(type=Failure.INVALID_SUBMISSION, message=reason, retryable=False)
        await self._refuse(job_id, error, message.reply_to or "", message.correlation_id or "")
        return DeadLetter(reason, kind)

    async def _refuse(
        self, job_id: str | None, error: ErrorInfo, reply_to: str, correlation_id: str
    ) -> None:
        """Record a refused job as FAILED (when it has an id) and tell its submitter."""
        if job_id is not None and not await self.store.fail_submission(
            job_id, error, self.by, reply_to, correlation_id
        ):
            # The id names an existing job, which this bad message does not change: answer
            # as for any repeated submission (its final state, once it has one).
            await self._reply_if_finished(job_id, reply_to, correlation_id)
            return
        if reply_to:
            await self.fleet.reply(
                reply_to,
                correlation_id,
                JobFinished(job_id=job_id or "", status="failed", error=error),
            )


def job_traceparent(message: Delivery) -> str:
    """The trace context kept with the job: the submitter's (a client's publish span, or a
    raw AMQP client's own ``traceparent``), else, when the message carried none (or an
    invalid one), the context of this scheduler's consume, which then starts the trace."""
    sent = message.header(TRACEPARENT).strip()
    if sent and valid_traceparent(sent):
        return sent
    return tracing.current_traceparent()


@dataclass(frozen=True, slots=True)
class _Invalid:
    """A job of a message that cannot be decoded: why, and the id fields it names."""

    reason: str
    job_id: str | None
    idempotency_key: str | None


def _decoded(raw: msgspec.Raw) -> SubmitJob | _Invalid:
    """One job of a message, or why it cannot be accepted."""
    try:
        return submit_decoder.decode(raw)
    except DECODE_ERRORS as exc:
        try:
            doc: Any = any_decoder.decode(raw)
        except DECODE_ERRORS:
            doc = None
        fields = doc if isinstance(doc, dict) else {}
        job_id, key = fields.get("job_id"), fields.get("idempotency_key")
        return _Invalid(
            f"invalid submission: {exc}",
            _valid(job_id) if isinstance(job_id, str) else None,
            key if isinstance(key, str) and 0 < len(key) <= 256 else None,
        )


def _valid(job_id: str | None) -> str | None:
    return job_id if job_id and is_valid_job_id(job_id) else None
