"""Agent/supervisor -> scheduler, and scheduler -> the submitter's ``reply_to``."""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Why a step or job failed."""

    type: str
    message: str
    retryable: bool = True


class StepRecorded(
    msgspec.Struct, frozen=True, kw_only=True, tag="step_recorded", tag_field="kind"
):
    """A step's outcome is recorded in Redis; the scheduler should advance the job.

    The outcome itself lives in Redis, so a duplicate or late announcement cannot change it.
    """

    job_id: str
    step: int
    attempt: int
    lease: int
    by: str


class JobFinished(msgspec.Struct, frozen=True, kw_only=True, tag="job_finished", tag_field="kind"):
    """Published to the submitter's ``reply_to`` when the job reaches a terminal state."""

    job_id: str
    status: str
    result: Any = None
    error: ErrorInfo | None = None
