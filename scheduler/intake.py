"""Accepting submissions: validate, de-duplicate, record, dispatch the first step."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from sasfleet.shared.amqp.consumer import Ack, DeadLetter, Delivery, Outcome
from sasfleet.shared.amqp.fleet import NOTIFY_HEADER, TRACEPARENT, FleetChannel
from sasfleet.shared.config import Settings
from sasfleet.shared.ids import is_valid_job_id, job_id_for_key, new_job_id
from sasfleet.shared.messages.codec import (
    DECODE_ERRORS,
    any_decoder,
    batch_decoder,
    encode,
    kind_decoder,
    submit_decoder,
)
from sasfleet.shared.messages.events import ErrorInfo, JobFinished
from sasfleet.shared.messages.submit import StepSpec, SubmitJob
from sasfleet.shared.state.records import CreateResult, NewJob, NewStep
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.statemachine import StepStatus
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import job_scope
from sasfleet.shared.telemetry.traceparent import is_valid as valid_traceparent

log = logging.getLogger(__name__)


class Intake:
    """Handles deliveries from ``<prefix>.submit``."""

    def __init__(self, settings: Settings, store: StateStore, fleet: FleetChannel) -> None:
        self.settings = settings
        self.store = store
        self.fleet = fleet
        self.accepted = 0
        # Jobs being created and dispatched at once: a backlog of batch messages (each up
        # to 1,000 jobs) is then worked through a slice at a time, so dispatches flow to
        # the agents from the first moment instead of after the whole backlog is created.
        self._accepting = asyncio.Semaphore(settings.scheduler_prefetch)

    async def handle(self, message: Delivery) -> Outcome:
        body = message.body
        if len(body) > self.settings.max_payload_bytes:
            return await self._reject(
                message,
                f"message of {len(body)} bytes exceeds the payload limit of "
                f"{self.settings.max_payload_bytes} bytes",
                parse=False,
                kind="too_large",
            )
        try:
            kind = kind_decoder.decode(body).kind
        except DECODE_ERRORS:
            kind = "submit"  # decoding it as a submission says what is wrong with it
        if kind == "submit_batch":
            return await self._handle_batch(message)
        try:
            submit = submit_decoder.decode(body)
            steps = submit.step_specs()
        except (*DECODE_ERRORS, ValueError) as exc:
            return await self._reject(message, f"invalid submission: {exc}")
        if submit.job_id is None and message.message_id and not is_valid_job_id(message.message_id):
            return await self._reject(message, "message_id is not a valid job id", parse=False)

        job_id = self._job_id(submit, message)
        if submit.idempotency_key:
            job_id = await self.store.reserve_idempotency_key(
                submit.idempotency_key, job_id, self.settings.job_ttl_s
            )
        with job_scope(job_id):
            created = await self.accept(
                submit,
                steps,
                job_id,
                reply_to=message.reply_to or "",
                correlation_id=message.correlation_id or "",
                traceparent=job_traceparent(message),
                notify=self._notify_channel(message),
            )
            if created.order is None:  # a duplicate, a delayed start, or cancelled on arrival
                await self._reply_if_finished(
                    job_id, message.reply_to or "", message.correlation_id or ""
                )
        return Ack()

    async def _handle_batch(self, message: Delivery) -> Outcome:
        try:
            batch = batch_decoder.decode(message.body)
        except DECODE_ERRORS as exc:
            metrics.JOBS_REJECTED.inc()
            return DeadLetter(f"invalid submission batch: {exc}")
        ids = [self._batch_job_id(job, i, message) for i, job in enumerate(batch.jobs)]
        if None in ids:
            metrics.JOBS_REJECTED.inc()
            return DeadLetter("message_id is not a valid job id prefix for a batch")
        traceparent = job_traceparent(message)
        # Every job is recorded and dispatched (or refused) before the batch is acked; a
        # batch redelivered after a crash finds its jobs by id and creates none twice.
        await asyncio.gather(
            *(
                self._accept_from_batch(job, job_id, message, traceparent)
                for job, job_id in zip(batch.jobs, ids, strict=True)
                if job_id is not None
            )
        )
        return Ack()

    def _batch_job_id(self, submit: SubmitJob, index: int, message: Delivery) -> str | None:
        if submit.job_id:
            return submit.job_id
        if submit.idempotency_key:
            return job_id_for_key(submit.idempotency_key)
        if not message.message_id:
            return new_job_id()
        job_id = f"{message.message_id}.{index}"
        return job_id if is_valid_job_id(job_id) else None

    async def _accept_from_batch(
        self, submit: SubmitJob, job_id: str, message: Delivery, traceparent: str
    ) -> None:
        """One job of a batch; replies (when asked) carry the job id as correlation id."""
        reply_to = message.reply_to or ""
        async with self._accepting:
            with job_scope(job_id):
                try:
                    steps = submit.step_specs()
                except ValueError as exc:
                    metrics.JOBS_REJECTED.inc()
                    error = ErrorInfo(
                        type="InvalidSubmission",
                        message=f"invalid submission: {exc}",
                        retryable=False,
                    )
                    log.warning(
                        "refused job %s of a batch: %s", job_id, exc, extra={"job_id": job_id}
                    )
                    await self._refuse(job_id, error, reply_to, job_id)
                    return
                if submit.idempotency_key:
                    job_id = await self.store.reserve_idempotency_key(
                        submit.idempotency_key, job_id, self.settings.job_ttl_s
                    )
                created = await self.accept(
                    submit,
                    steps,
                    job_id,
                    reply_to=reply_to,
                    correlation_id=job_id,
                    traceparent=traceparent,
                    notify=self._notify_channel(message),
                )
                if created.order is None:
                    await self._reply_if_finished(job_id, reply_to, job_id)

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
            steps=[new_step(spec, self.settings) for spec in steps],
            idempotency_key=submit.idempotency_key or "",
            reply_to=reply_to,
            correlation_id=correlation_id,
            traceparent=traceparent,
            notify=notify,
            start_at_ms=self._start_at(submit),
            ttl_s=self.settings.job_ttl_s,
        )
        created = await self.store.create_job(job, self.fleet.by)
        if created.created:
            self.accepted += 1
            metrics.JOBS_SUBMITTED.inc()
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
            await self.fleet.dispatch(created.order, traceparent)
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

    def _job_id(self, submit: SubmitJob, message: Delivery) -> str:
        # With an idempotency key the id is derived from the key (not the message_id), so
        # every client that re-submits with the key, from any library, learns the same id.
        if submit.job_id:
            return submit.job_id
        if submit.idempotency_key:
            return job_id_for_key(submit.idempotency_key)
        if message.message_id:
            return message.message_id
        return new_job_id()

    async def _reply_if_finished(self, job_id: str, reply_to: str, correlation_id: str) -> None:
        if reply_to:
            finished = await self.store.finished(job_id)
            if finished is not None:
                await self.fleet.reply(reply_to, correlation_id, finished.message(job_id))

    async def _reject(
        self, message: Delivery, reason: str, *, parse: bool = True, kind: str = "invalid"
    ) -> Outcome:
        """Dead-letter a submission; when it names a job, that job is recorded FAILED."""
        metrics.JOBS_REJECTED.inc()
        job_id = _named_job_id(message, parse)
        if job_id is not None:
            tracing.annotate(tracing.job_attributes(job_id))
        error = ErrorInfo(type="InvalidSubmission", message=reason, retryable=False)
        await self._refuse(job_id, error, message.reply_to or "", message.correlation_id or "")
        return DeadLetter(reason, kind)

    async def _refuse(
        self, job_id: str | None, error: ErrorInfo, reply_to: str, correlation_id: str
    ) -> None:
        """Record a refused job as FAILED (when it has an id) and tell its submitter."""
        if job_id is not None and not await self.store.fail_submission(
            job_id, error, self.fleet.by, reply_to, correlation_id, self.settings.job_ttl_s
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


def new_step(spec: StepSpec, s: Settings) -> NewStep:
    """A step as recorded: its own options, else the fleet's defaults."""
    return NewStep(
        task=spec.task,
        pool=spec.pool or s.default_pool,
        payload=encode(spec.payload),
        max_attempts=spec.max_attempts or s.max_attempts,
        max_attempts_explicit=spec.max_attempts,
        timeout_ms=_ms(spec.timeout_s or s.step_timeout_s),
        schedule_to_start_ms=_ms(spec.schedule_to_start_s or s.dispatch_timeout_s),
        schedule_to_close_ms=_ms(spec.schedule_to_close_s or 0),
        heartbeat_ms=_ms(spec.heartbeat_timeout_s or 0),
        compensation=spec.compensation or "",
        retry=encode(spec.retry) if spec.retry else b"",
        priority=spec.priority or "",
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _named_job_id(message: Delivery, parse: bool) -> str | None:
    if parse:
        try:
            doc: Any = any_decoder.decode(message.body)
        except DECODE_ERRORS:
            doc = None
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("job_id"), str)
            and is_valid_job_id(doc["job_id"])
        ):
            return str(doc["job_id"])
    if message.message_id and is_valid_job_id(message.message_id):
        return message.message_id
    return None
