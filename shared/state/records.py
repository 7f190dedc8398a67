"""Typed inputs and outputs of the store's scripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sasfleet.shared.messages.codec import any_decoder, encode, error_decoder
from sasfleet.shared.messages.events import JobFinished


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step as recorded at submission; options already resolved against the fleet's
    defaults, except ``max_attempts_explicit`` (None: the task's default decides)."""

    task: str
    pool: str
    payload: bytes  # JSON
    max_attempts: int
    timeout_ms: int
    schedule_to_start_ms: int = 300_000
    max_attempts_explicit: int | None = None
    compensation: str = ""
    retry: bytes = b""  # JSON of the step's RetrySpec, "" for none
    schedule_to_close_ms: int = 0
    heartbeat_ms: int = 0
    priority: str = ""

    def fields(self) -> bytes:
        """The step hash's fields, as one JSON object for create_job.lua."""
        return encode(
            {
                "task": self.task,
                "pool": self.pool,
                "payload": self.payload.decode(),
                "max_attempts": self.max_attempts,
                "timeout_ms": self.timeout_ms,
                "s2s_ms": self.schedule_to_start_ms,
                "s2c_ms": self.schedule_to_close_ms,
                "hb_ms": self.heartbeat_ms,
                "priority": self.priority,
                "compensation": self.compensation,
                "retry": self.retry.decode(),
                "max_explicit": ""
                if self.max_attempts_explicit is None
                else str(self.max_attempts_explicit),
            }
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: str
    steps: list[NewStep]
    idempotency_key: str = ""
    reply_to: str = ""
    correlation_id: str = ""
    traceparent: str = ""
    notify: str = ""  # a Redis channel told of the job's end (the Python client's)
    start_at_ms: int = 0  # 0 or the past: start at once
    ttl_s: int = 7 * 24 * 3600  # how long the job's keys stay once it ends


@dataclass(frozen=True, slots=True)
class DispatchOrder:
    """What to publish to an agent pool for one attempt of one step."""

    job_id: str
    step: int
    lease: int
    attempt: int
    task: str
    pool: str
    payload: str
    timeout_ms: int
    compensates: int | None = None
    max_attempts: int | None = None  # when the step chose it
    retry: str = ""  # JSON of the step's RetrySpec
    heartbeat_ms: int = 0
    priority: str = ""  # "high" routes to the pool's high-priority queue
    traceparent: str = ""  # the job's trace context, for the spans of whoever dispatches

    @classmethod
    def from_reply(cls, job_id: str, reply: list[Any]) -> DispatchOrder:
        # The trailing traceparent is optional so a reply without it still decodes.
        traceparent = reply[13] if len(reply) > 13 else ""
        (
            _kind,
            lease,
            attempt,
            task,
            pool,
            payload,
            timeout_ms,
            step,
            compensates,
            max_explicit,
            retry,
            heartbeat_ms,
            priority,
        ) = reply[:13]
        return cls(
            job_id,
            int(step),
            int(lease),
            int(attempt),
            task,
            pool,
            payload,
            int(timeout_ms),
            int(compensates) if compensates not in ("", None) else None,
            int(max_explicit) if max_explicit not in ("", None) else None,
            retry or "",
            int(heartbeat_ms or 0),
            priority or "",
            traceparent or "",
        )


@dataclass(frozen=True, slots=True)
class CreateResult:
    created: bool
    job_status: str
    step_status: str
    order: DispatchOrder | None  # the current step's dispatch; None when there is none
    start_at_ms: int = 0  # a delayed job's start


@dataclass(frozen=True, slots=True)
class Finished:
    """A job reached a terminal state (now, or before this duplicate announcement)."""

    status: str
    reply_to: str
    correlation_id: str
    result: str  # JSON or ""
    error: str  # JSON or ""

    def message(self, job_id: str) -> JobFinished:
        """The reply a submitter gets for this job."""
        return JobFinished(
            job_id=job_id,
            status=self.status,
            result=any_decoder.decode(self.result) if self.result else None,
            error=error_decoder.decode(self.error) if self.error else None,
        )


@dataclass(frozen=True, slots=True)
class Announce:
    """A recorded outcome (or a final timeout) that a scheduler must take up."""

    step: int
    attempt: int
    lease: int


AdvanceResult = DispatchOrder | Finished | int | None  # int: retry due (ms); None: stale
RecoverResult = DispatchOrder | Announce | None  # None: nothing to do
