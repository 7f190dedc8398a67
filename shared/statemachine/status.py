"""Step and job statuses. Values are the lowercase names used in Redis and in JSON output."""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING_RETRY = "waiting_retry"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"


STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})
# A step in one of these holds a lease (or waits for one) and has a deadline in Redis.
STEP_ACTIVE = frozenset({StepStatus.DISPATCHED, StepStatus.RUNNING, StepStatus.WAITING_RETRY})

JOB_TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.COMPENSATED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.ESCALATED,
    }
)
