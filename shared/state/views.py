"""Read models of jobs, steps and agents: the stable ``--json`` interface of the CLI."""

from __future__ import annotations

from typing import Any

import msgspec


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One transition: who (``by``) did what (``event``), when (``ts``, ms), to which attempt."""

    ts: int
    by: str
    event: str
    step: int | None = None
    attempt: int | None = None
    lease: int | None = None
    status: str | None = None  # the status the transition led to
    previous: str | None = None  # the status it came from
    detail: str | None = None


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    task: str
    pool: str
    status: str
    attempt: int
    max_attempts: int
    lease: int
    timeout_s: float
    payload: Any = None
    result: Any = None
    error: Any = None
    locked_by: str | None = None
    compensates: int | None = None  # set on a compensation: the step it undoes
    progress: Any = None  # the handler's last ctx.heartbeat() details
    dispatched_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None


class JobView(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    status: str
    created_at: int
    updated_at: int
    finished_at: int | None = None
    submitted_by: str | None = None
    idempotency_key: str | None = None
    traceparent: str | None = None
    result: Any = None
    error: Any = None
    steps: list[StepView] = []
    history: list[HistoryEntry] = []


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    pool: str
    host: str
    pid: int
    concurrency: int
    started_at: int
    last_beat: int
    running: list[str] = []
    tasks: list[str] = []
    version: str = ""  # the sasfleet release the agent runs
