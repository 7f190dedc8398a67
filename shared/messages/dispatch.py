"""Scheduler/supervisor -> agent: run one attempt of one step."""

from __future__ import annotations

import msgspec


class StepDispatch(msgspec.Struct, frozen=True, kw_only=True, tag="dispatch", tag_field="kind"):
    """One attempt of a step. Only the holder of ``lease`` may change the step."""

    job_id: str
    step: int
    task: str
    attempt: int
    lease: int
    idempotency_key: str
    timeout_ms: int
    payload: msgspec.Raw
