"""Scheduler/supervisor -> agent: run one attempt of one step."""

from __future__ import annotations

import msgspec

from sasfleet.shared.messages.submit import RetrySpec


class StepDispatch(msgspec.Struct, frozen=True, kw_only=True, tag="dispatch", tag_field="kind"):
    """One attempt of a step. Only the holder of ``lease`` may change the step.

    ``compensates`` names the forward step a compensation undoes. ``max_attempts`` and
    ``retry`` are the step's own choices (None: the task's defaults, else the fleet's).
    """

    job_id: str
    step: int
    task: str
    attempt: int
    lease: int
    idempotency_key: str
    timeout_ms: int
    payload: msgspec.Raw
    compensates: int | None = None
    max_attempts: int | None = None
    retry: RetrySpec | None = None
    heartbeat_timeout_ms: int = 0
