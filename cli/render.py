"""Human-readable renderings of jobs and agents for the CLI (rich tables)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sasfleet.shared.messages.codec import encode
from sasfleet.shared.state.views import AgentView, JobView, StepView
from sasfleet.shared.statemachine import Failure
from sasfleet.shared.telemetry.traceparent import trace_id


def console() -> Console:
    """A console that does not wrap tables at 80 columns when output is piped."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def _short(value: object, width: int = 60) -> str:
    text = encode(value).decode() if value is not None else "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_error(error: object) -> str:
    """A recorded error as ``type (kind): message``: the kind of a failure the fleet
    names (timeout, loss, bad_input, ...), else ``handler`` (the handler's exception)."""
    if not isinstance(error, dict) or not isinstance(error.get("type"), str):
        return _short(error, 200)
    failure = Failure.of(error["type"])
    kind = failure.kind if failure is not None else "handler"
    return f"{error['type']} ({kind}): {error.get('message', '')}"


def _duration(start: int | None, end: int | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start) / 1000:.3f}s"


def _step_name(s: StepView) -> str:
    return f"{s.task} (undoes {s.compensates})" if s.compensates is not None else s.task


def render_job(out: Console, job: JobView) -> None:
    """Summary, steps, and the history as a timeline relative to the submission."""
    out.print(
        f"[bold]job {job.job_id}[/bold]  status [bold]{job.status}[/bold]  "
        f"created {_ts(job.created_at)} UTC  took {_duration(job.created_at, job.finished_at)}"
    )
    if job.idempotency_key:
        out.print(f"idempotency key: {job.idempotency_key}")
    if job.traceparent:
        trace = trace_id(job.traceparent)
        if trace:
            # The id to paste into Jaeger's search (or its /trace/<id> URL).
            out.print(f"trace id: [bold]{trace}[/bold]  (traceparent {job.traceparent})")
        else:
            out.print(f"traceparent: {job.traceparent} (not a valid W3C traceparent)")
    if job.result is not None:
        out.print(f"result: {_short(job.result, 200)}")
    if job.error is not None:
        out.print(f"[red]error: {escape(describe_error(job.error))}[/red]")
    steps = Table(title="steps", title_justify="left")
    for col in (
        "#",
        "task",
        "pool",
        "status",
        "attempt",
        "lease",
        "agent",
        "ran",
        "result / error / progress",
    ):
        steps.add_column(col)
    for s in job.steps:
        if s.error is not None:
            shown = describe_error(s.error)
        else:
            shown = _short(s.result if s.result is not None else s.progress)
        steps.add_row(
            str(s.index),
            _step_name(s),
            s.pool,
            s.status,
            f"{s.attempt}/{s.max_attempts}",
            str(s.lease),
            s.locked_by or "-",
            _duration(s.started_at, s.finished_at),
            shown if len(shown) <= 60 else shown[:59] + "…",
        )
    out.print(steps)
    timeline = Table(title="timeline", title_justify="left")
    for col in ("+time", "step", "attempt", "event", "from -> to", "lease", "by", "detail"):
        timeline.add_column(col)
    names = {s.index: _step_name(s) for s in job.steps}
    for h in job.history:
        step = "-" if h.step is None else f"{h.step} {names.get(h.step, '')}".strip()
        timeline.add_row(
            f"+{(h.ts - job.created_at) / 1000:.3f}s",
            step,
            "-" if h.attempt is None else str(h.attempt),
            h.event,
            f"{h.previous or ''} -> {h.status or ''}",
            "-" if h.lease is None else str(h.lease),
            h.by,
            h.detail or "",
        )
    out.print(timeline)


def render_jobs(out: Console, jobs: list[JobView]) -> None:
    table = Table()
    for col in ("job", "status", "created (UTC)", "steps", "took"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.job_id,
            j.status,
            _ts(j.created_at),
            str(len(j.steps)),
            _duration(j.created_at, j.finished_at),
        )
    out.print(table)


def render_agents(out: Console, agents: list[AgentView]) -> None:
    now = time.time() * 1000
    table = Table()
    for col in ("agent", "version", "pool", "host", "pid", "slots", "last beat", "running"):
        table.add_column(col)
    for a in agents:
        table.add_row(
            a.agent_id,
            a.version or "-",
            a.pool,
            a.host,
            str(a.pid),
            str(a.concurrency),
            f"{(now - a.last_beat) / 1000:.1f}s ago",
            f"{len(a.running)}: " + ", ".join(a.running[:5]),
        )
    out.print(table)
