"""Logs with job and trace context, metric helpers, how recoveries are classified, and what
the CLI shows (job show, top). The /metrics, /healthz and /readyz endpoints are served and
requested in tests/system/test_health_endpoints.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter

import pytest
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console

from sasfleet.cli.render import render_job
from sasfleet.cli.top import Snapshot, render
from sasfleet.shared.state.records import Recovered, Stale
from sasfleet.shared.state.views import AgentView, JobView, StepView
from sasfleet.shared.statemachine import Failure
from sasfleet.shared.telemetry import metrics, tracing
from sasfleet.shared.telemetry.logs import ContextFilter, JsonFormatter, TextFormatter, job_scope
from sasfleet.supervisor.recovery import recovery_kind

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


# --------------------------------------------------------------------------- logs


def record(message: str = "hello", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("sasfleet.test", logging.INFO, __file__, 1, message, None, None)
    rec.__dict__.update(extra)
    ContextFilter().filter(rec)
    return rec


def test_log_lines_carry_the_job_scope_in_json() -> None:
    fmt = JsonFormatter("agent", "agent-1")
    with job_scope("j1", 2, attempt=3, lease=7, task="charge"):
        inside = json.loads(fmt.format(record()))
        overridden = json.loads(fmt.format(record(step=5)))
    outside = json.loads(fmt.format(record()))
    assert {k: inside[k] for k in ("service", "instance", "job_id", "step", "attempt")} == {
        "service": "agent",
        "instance": "agent-1",
        "job_id": "j1",
        "step": 2,
        "attempt": 3,
    }
    assert (inside["lease"], inside["task"], inside["msg"]) == (7, "charge", "hello")
    assert overridden["step"] == 5  # a field passed in `extra` wins
    assert "job_id" not in outside and "trace_id" not in outside


async def test_the_job_scope_flows_into_tasks_started_inside_it() -> None:
    fmt = JsonFormatter("scheduler", "s-1")

    async def later() -> dict[str, object]:
        await asyncio.sleep(0)
        return dict(json.loads(fmt.format(record())))

    with job_scope("j9", 0):
        task = asyncio.create_task(later())
    assert (await task)["job_id"] == "j9"


def test_log_lines_carry_the_trace_id_of_the_current_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(tracing, "_enabled", True)
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("test"))
    with tracing.job_span("run echo", {}) as span:
        line = json.loads(JsonFormatter("agent", "a-1").format(record()))
        text = TextFormatter("agent", "a-1").format(record())
    assert span.traceparent[3:35] == line["trace_id"]
    assert span.traceparent[36:52] == line["span_id"]
    assert f"trace_id={line['trace_id']}" in text and "span_id" not in text
    assert "agent [a-1] sasfleet.test: hello" in text


def test_timeouts_are_counted_by_their_failure_label_and_other_errors_ignored() -> None:
    timeouts = [f for f in Failure if f.is_timeout]

    def count(kind: str) -> float:
        value = metrics.REGISTRY.get_sample_value("sasfleet_step_timeouts_total", {"kind": kind})
        return value or 0.0

    before = {f.label: count(f.label) for f in timeouts}
    metrics.count_timeout("StartToCloseTimeout")
    metrics.count_timeout("HeartbeatTimeout")
    metrics.count_timeout("RuntimeError")
    metrics.count_timeout("LeaseExpired")  # a loss, not a timeout
    after = {f.label: count(f.label) for f in timeouts}
    assert {k: after[k] - before[k] for k in after} == {
        "schedule_to_start": 0,
        "start_to_close": 1,
        "schedule_to_close": 0,
        "heartbeat": 1,
    }


# --------------------------------------------------------------------------- recoveries


@pytest.mark.parametrize(
    ("recovered", "kind"),
    [
        (Recovered(next=Stale(), failure="LeaseExpired"), "lease_expired"),
        (Recovered(next=Stale(), failure="ScheduleToStartTimeout"), "schedule_to_start"),
        (Recovered(next=Stale(), failure="ScheduleToCloseTimeout"), "schedule_to_close"),
        (Recovered(next=Stale(), failure="Cancelled"), "cancelled"),
        (Recovered(next=Stale(), repair=True), "repair"),
    ],
)
def test_a_recovery_is_named_by_the_failure_the_script_reports(
    recovered: Recovered, kind: str
) -> None:
    assert recovery_kind(recovered) == kind


# --------------------------------------------------------------------------- CLI views


def test_job_show_prints_the_trace_id() -> None:
    out = Console(record=True, width=200)
    job = JobView(
        job_id="j1",
        status="succeeded",
        created_at=1_000,
        updated_at=2_000,
        finished_at=2_000,
        traceparent=f"00-{TRACE}-00f067aa0ba902b7-01",
    )
    render_job(out, job)
    assert f"trace id: {TRACE}" in out.export_text()
    render_job(out, JobView(job_id="j2", status="running", created_at=1, updated_at=1))
    assert out.export_text().count("trace id") == 0  # export_text cleared the record


def test_job_show_names_the_kind_of_each_failure() -> None:
    out = Console(record=True, width=200)
    lost = {"type": "LeaseExpired", "message": "attempt 1: lease expired", "retryable": True}
    job = JobView(
        job_id="j1",
        status="failed",
        created_at=1_000,
        updated_at=2_000,
        error={"type": "ValueError", "message": "bad order", "retryable": True},
        steps=[
            StepView(
                index=0,
                task="ship",
                pool="default",
                status="failed",
                attempt=1,
                max_attempts=1,
                lease=1,
                timeout_s=30,
                error=lost,
            )
        ],
    )
    render_job(out, job)
    text = out.export_text()
    assert "error: ValueError (handler): bad order" in text
    assert "LeaseExpired (loss): attempt 1: lease expired" in text


def test_top_renders_states_agents_queues_and_failures() -> None:
    now = time.time()
    failed = JobView(
        job_id="j-bad",
        status="compensated",
        created_at=int(now * 1000) - 900,
        updated_at=int(now * 1000),
        finished_at=int(now * 1000),
        error={"type": "NonRetryableError", "message": "ship refused order o-1"},
    )
    agent = AgentView(
        agent_id="agent-default-h-1",
        pool="default",
        host="h",
        pid=1,
        concurrency=8,
        started_at=0,
        last_beat=int(now * 1000) - 500,
        running=["j-1|0", "j-2|1"],
    )
    snap = Snapshot(
        at=now,
        prefix="fleet",
        window=2000,
        states=Counter({"succeeded": 120, "running": 3, "compensated": 1}),
        agents=[agent],
        queues={"fleet.submit": (5, 1), "fleet.pool.default": (42, 1)},
        failures=[failed],
        throughput=12.5,
        latency_ms={50: 20.0, 95: 80.0, 99: 120.0},
    )
    out = Console(record=True, width=160)
    out.print(render(snap))
    text = out.export_text()
    assert "12.5 jobs/s" in text and "20/80/120 ms" in text
    assert "succeeded" in text and "120" in text
    assert "fleet.pool.default" in text and "42" in text
    assert "agent-default-h-1" in text and "2/8" in text and "j-1|0, j-2|1" in text
    assert "j-bad" in text and "NonRetryableError: ship refused order o-1" in text
