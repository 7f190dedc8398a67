"""Human-readable renderings of jobs and agents for the CLI (rich tables)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.state.views import AgentView, JobView


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def _short(value: object, width: int = 60) -> str:
    text = encode(value).decode() if value is not None else "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def render_job(console: Console, job: JobView) -> None:
    took = f"{(job.finished_at - job.created_at) / 1000:.3f}s" if job.finished_at else "-"
    console.print(
        f"[bold]job {job.job_id}[/bold]  status [bold]{job.status}[/bold]  "
        f"created {_ts(job.created_at)} UTC  took {took}"
    )
    if job.idempotency_key:
        console.print(f"idempotency key: {job.idempotency_key}")
    if job.traceparent:
        console.print(f"traceparent: {job.traceparent}")
    if job.result is not None:
        console.print(f"result: {_short(job.result, 200)}")
    if job.error is not None:
        console.print(f"[red]error: {_short(job.error, 200)}[/red]")
    steps = Table(title="steps", title_justify="left")
    for col in ("#", "task", "pool", "status", "attempt", "lease", "agent", "result / error"):
        steps.add_column(col)
    for s in job.steps:
        steps.add_row(
            str(s.index),
            s.task,
            s.pool,
            s.status,
            f"{s.attempt}/{s.max_attempts}",
            str(s.lease),
            s.locked_by or "-",
            _short(s.error if s.error is not None else s.result),
        )
    console.print(steps)
    history = Table(title="history", title_justify="left")
    for col in ("time (UTC)", "event", "step", "attempt", "lease", "from -> to", "by", "detail"):
        history.add_column(col)
    for h in job.history:
        history.add_row(
            _ts(h.ts),
            h.event,
            "-" if h.step is None else str(h.step),
            "-" if h.attempt is None else str(h.attempt),
            "-" if h.lease is None else str(h.lease),
            f"{h.previous or ''} -> {h.status or ''}",
            h.by,
            h.detail or "",
        )
    console.print(history)


def render_jobs(console: Console, jobs: list[JobView]) -> None:
    table = Table()
    for col in ("job", "status", "created (UTC)", "steps", "took"):
        table.add_column(col)
    for j in jobs:
        took = f"{(j.finished_at - j.created_at) / 1000:.3f}s" if j.finished_at else "-"
        table.add_row(j.job_id, j.status, _ts(j.created_at), str(len(j.steps)), took)
    console.print(table)


def render_agents(console: Console, agents: list[AgentView]) -> None:
    now = time.time() * 1000
    table = Table()
    for col in ("agent", "pool", "host", "pid", "slots", "last beat", "running"):
        table.add_column(col)
    for a in agents:
        table.add_row(
            a.agent_id,
            a.pool,
            a.host,
            str(a.pid),
            str(a.concurrency),
            f"{(now - a.last_beat) / 1000:.1f}s ago",
            f"{len(a.running)}: " + ", ".join(a.running[:5]),
        )
    console.print(table)
