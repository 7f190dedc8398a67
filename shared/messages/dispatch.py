"""Scheduler/agent/supervisor -> agent: run one attempt of one step."""

from __future__ import annotations

import msgspec

from sasfleet.shared.messages.submit import RetrySpec


class StepDispatch(msgspec.Struct, frozen=True, kw_only=True, tag="dispatch", tag_field="kind"):
    """One attempt of a step. Only the holder of ``lease`` may change the step.

    The state scripts write this message from the step's record, copying each of these
    fields by name, so a step option keeps its submit-message name here. ``compensates``
    names the forward step a compensation undoes; ``max_attempts`` and ``retry`` are the
    step's own choices (None: the task's defaults, else the fleet's).
    """

    job_id: str
    step: int
    task: str
    attempt: int
    lease: int
    idempotency_key: str
    timeout_s: float
    payload: msgspec.Raw
    compensates: int | None = None
    max_attempts: int | None = None
    retry: RetrySpec | None = None
    heartbeat_timeout_s: float | None = None


class DispatchOrder(msgspec.Struct, frozen=True, kw_only=True, tag="dispatch", tag_field="kind"):
    """A state script's answer "publish this attempt": where it goes, what the publisher's
    span and metrics need, and the :class:`StepDispatch` itself, encoded by the script.
    ``again``: a dispatch made earlier, handed out again (its publish may have been lost)."""

    job_id: str
    step: int
    task: str
    attempt: int
    lease: int
    pool: str
    priority: str = ""  # "high" routes to the pool's high-priority queue
    compensates: int | None = None
    traceparent: str = ""  # the job's trace context, for the spans of whoever publishes
    again: bool = False
    message: str  # the StepDispatch, JSON
