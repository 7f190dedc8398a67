"""One trace per job, across the real service processes, exported over OTLP/HTTP to a
receiver inside the test that decodes the protobuf with ``opentelemetry-proto``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import aio_pika
import msgspec
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from otlp_support import (
    CLIENT,
    CONSUMER,
    ERROR,
    INTERNAL,
    PRODUCER,
    OtlpReceiver,
    SpanRecord,
    attempt_span,
    matching,
    one,
    otel_env,
    serve_otlp,
)

from sasfleet.examples.tasks import order_job
from sasfleet.shared.messages.submit import SubmitJob
from sasfleet.shared.telemetry.traceparent import trace_id as trace_id_of

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with serve_otlp() as receiver:
        yield receiver


@pytest.fixture
def traced_trio(fleet, otlp, start_services):
    """A scheduler, a supervisor and an agent that export their spans to ``otlp``."""
    fleet.env.update(otel_env(otlp))
    return start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "8")),
    )


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import msgspec
    from sasfleet.shared.client import Client
    from sasfleet.shared.config import load_settings
    from sasfleet.shared.ids import instance_id
    from sasfleet.shared.messages.submit import SubmitJob
    from sasfleet.shared.telemetry.tracing import setup_tracing, shutdown_tracing

    async def main() -> None:
        job = msgspec.json.decode(sys.argv[1].encode(), type=SubmitJob)
        async with Client(load_settings()) as client:
            job_id = await client.submit_job(job)
            outcome = await client.wait(job_id, timeout=60)
        print(job_id, outcome.status)

    assert setup_tracing("client", instance_id("client"))
    asyncio.run(main())
    shutdown_tracing()
    """
)


async def submit_from_a_traced_client(
    fleet_env: dict[str, str], receiver: OtlpReceiver, job: SubmitJob
) -> tuple[str, str]:
    """Submit ``job`` from a separate Python process that traces; returns (job id, status)."""
    env = {**os.environ, **fleet_env, **otel_env(receiver)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        msgspec.json.encode(job).decode(),
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    job_id, status = out.decode().split()
    return job_id, status


# --------------------------------------------------------------------------- the tests


async def test_a_three_step_job_with_a_retry_and_a_compensation_is_one_trace(
    traced_trio, otlp, fleet_env, settings, client
):
    _scheduler, _supervisor, agent = traced_trio
    steps = order_job("o-traced", flaky_step="charge_card", flaky_until=2, fail_step="ship")
    job_id, status = await submit_from_a_traced_client(fleet_env, otlp, SubmitJob(steps=steps))
    assert status == "compensated"

    # Every step, attempt and compensation of the job ran: 0, 1 (twice), 2, then 4 and 3.
    def complete(spans: list[SpanRecord]) -> bool:
        runs = {
            (s.attr("sasfleet.step.index"), s.attr("sasfleet.step.attempt"))
            for s in spans
            if s.service == "sasfleet-agent" and s.kind == INTERNAL
        }
        ended = any(s.attr("sasfleet.job.status") == "compensated" for s in spans)
        return {(0, 1), (1, 1), (1, 2), (2, 1), (4, 1), (3, 1)} <= runs and ended

    spans = await otlp.wait_for(complete, timeout=30, what="the job's spans")

    # Exactly one trace: no polling loop (timers, deadline scans, heartbeats) started one.
    assert {s.trace_id for s in spans} == {spans[0].trace_id}
    trace_id = spans[0].trace_id
    view = await client.get(job_id)
    assert view is not None and trace_id_of(view.traceparent or "") == trace_id
    by_id = {s.span_id: s for s in spans}
    assert {s.service for s in spans} == {
        "sasfleet-client",
        "sasfleet-scheduler",
        "sasfleet-agent",
    }

    # The client's submit is the root; the job's stored traceparent is that span.
    (root,) = [s for s in spans if not s.parent_id]
    assert (root.service, root.kind, root.name) == (
        "sasfleet-client",
        PRODUCER,
        f"publish {settings.prefix}:{settings.prefix}.submit",
    )
    assert (view.traceparent or "").startswith(f"00-{trace_id}-{root.span_id}-")
    assert root.attr("messaging.system") == "rabbitmq"
    assert root.attr("messaging.operation.type") == "send"
    assert root.attr("messaging.operation.name") == "publish"
    assert root.attr("messaging.destination.name") == f"{settings.prefix}:{settings.prefix}.submit"
    assert root.attr("messaging.rabbitmq.destination.routing_key") == f"{settings.prefix}.submit"
    assert root.attr("messaging.message.id") == job_id
    assert root.attr("server.address") == "127.0.0.1" and root.attr("server.port") == 5672

    # The scheduler's consume of the submission: a CONSUMER child of the client's publish,
    # linked to it, with the messaging attributes.
    intake = one(spans, service="sasfleet-scheduler", parent_id=root.span_id, kind=CONSUMER)
    assert intake.name == f"process {settings.prefix}:{settings.prefix}.submit"
    assert intake.links == [(trace_id, root.span_id)]
    assert intake.attr("messaging.operation.type") == "process"
    assert intake.attr("messaging.operation.name") == "process"
    assert intake.attr("messaging.message.id") == job_id
    assert isinstance(intake.attr("messaging.rabbitmq.message.delivery_tag"), int)
    assert intake.attr("sasfleet.job.id") == job_id
    assert intake.attr("sasfleet.outcome") == "ack"

    pool = f"{settings.prefix}:{settings.prefix}.pool.default"
    events = f"{settings.prefix}:{settings.prefix}.events"

    def chain_to_attempt(
        step: int, attempt: int, publisher: str = "sasfleet-scheduler"
    ) -> tuple[SpanRecord, SpanRecord, SpanRecord]:
        """The attempt's span, the agent's process span above it and the publish above that."""
        run = attempt_span(spans, step, attempt)
        process = by_id[run.parent_id]
        publish = by_id[process.parent_id]
        assert (process.service, process.kind, process.name) == (
            "sasfleet-agent",
            CONSUMER,
            f"process {pool}",
        )
        assert process.links == [(trace_id, publish.span_id)]
        assert (publish.kind, publish.name) == (PRODUCER, f"publish {pool}")
        assert publish.service == publisher
        assert publish.attr("sasfleet.job.id") == job_id
        assert publish.attr("sasfleet.step.index") == step
        assert publish.attr("sasfleet.step.attempt") == attempt
        assert (
            publish.attr("messaging.message.id")
            == f"{job_id}:{step}:{run.attr('sasfleet.step.lease')}"
        )
        for s in (run, process):
            assert s.attr("sasfleet.job.id") == job_id
            assert s.attr("sasfleet.step.index") == step
            assert s.attr("sasfleet.step.attempt") == attempt
            assert s.attr("sasfleet.step.lease") == publish.attr("sasfleet.step.lease")
        assert run.attr("sasfleet.agent.id").startswith("agent-default-") and (
            f"-{agent.pid}-" in run.attr("sasfleet.agent.id")
        )
        return run, process, publish

    # Step 0: dispatched by the scheduler within its consume of the submission.
    run0, _, publish0 = chain_to_attempt(0, 1)
    assert publish0.parent_id == intake.span_id
    assert (run0.name, run0.status) == ("run reserve_stock", PbStatus.STATUS_CODE_UNSET)
    assert run0.attr("sasfleet.task.name") == "reserve_stock"
    # The handler's Redis commands nest under the attempt (claim happens before it starts).
    assert any(s.kind == CLIENT and s.parent_id == run0.span_id for s in spans)
    # The agent records step 0's success and dispatches step 1 in the same script, then
    # publishes that dispatch from inside the attempt: no announcement, no scheduler.
    run1a, _, publish1a = chain_to_attempt(1, 1, publisher="sasfleet-agent")
    assert publish1a.parent_id == run0.span_id
    assert not [s for s in spans if s.name == f"publish {events}" and s.parent_id == run0.span_id]

    # The failed attempt: error status, the exception recorded.
    assert run1a.name == "run charge_card"
    assert run1a.status == ERROR
    assert run1a.attr("error.type") == "RuntimeError"
    assert "flaked on attempt 1" in run1a.status_message
    (exception,) = [e for e in run1a.events if e[0] == "exception"]
    assert exception[1]["exception.type"] == "RuntimeError"

    # The retry timer fired in the scheduler: its span is a child of the job's root (the
    # stored traceparent) and the second attempt's dispatch nests under it.
    run1b, _, publish1b = chain_to_attempt(1, 2)
    timer = by_id[publish1b.parent_id]
    assert (timer.service, timer.kind, timer.name) == (
        "sasfleet-scheduler",
        INTERNAL,
        "retry charge_card",
    )
    assert timer.parent_id == root.span_id
    assert timer.attr("sasfleet.step.attempt") == 2
    assert run1b.status != ERROR

    # Step 2 fails for good; the compensations run in reverse order, each its own span.
    # (Dispatched by the agent that recorded step 1's second attempt, from inside it.)
    run2, _, publish2 = chain_to_attempt(2, 1, publisher="sasfleet-agent")
    assert publish2.parent_id == run1b.span_id
    assert (run2.name, run2.status, run2.attr("error.type")) == (
        "run ship",
        ERROR,
        "NonRetryableError",
    )
    refund, _, refund_publish = chain_to_attempt(4, 1)
    release, _, _ = chain_to_attempt(3, 1)
    assert (refund.name, refund.attr("sasfleet.step.compensates")) == ("compensate refund_card", 1)
    assert (release.name, release.attr("sasfleet.step.compensates")) == (
        "compensate release_stock",
        0,
    )
    assert refund_publish.attr("sasfleet.step.compensates") == 1
    assert refund.start_ns < release.start_ns
    # The scheduler's consume that ended the job records the final status.
    ends = [s for s in spans if s.attr("sasfleet.job.status") == "compensated"]
    assert len(ends) == 1 and ends[0].kind == CONSUMER


async def raw_submit(settings: Any, doc: Any, headers: dict[str, Any] | None = None) -> None:
    """Publish a submission as a plain AMQP client would (default exchange, queue name)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                msgspec.json.encode(doc),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                headers=headers,
            ),
            routing_key=f"{settings.prefix}.submit",
        )
    finally:
        await connection.close()


async def test_a_raw_amqp_publish_with_a_traceparent_lands_in_the_senders_trace(
    traced_trio, otlp, jobs, settings
):
    sender_trace, sender_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = f"00-{sender_trace}-{sender_span}-01"

    await raw_submit(
        settings,
        {"task": "echo", "payload": {"raw": True}, "job_id": "raw-traced-1"},
        {"traceparent": traceparent, "tracestate": "vendor=opaque"},
    )
    await raw_submit(
        settings, {"task": "echo", "payload": {"raw": False}, "job_id": "raw-untraced-1"}
    )

    view = await jobs.status("raw-traced-1", "succeeded")
    untraced = await jobs.status("raw-untraced-1", "succeeded")
    assert view.traceparent == traceparent  # the sender's own context is kept with the job

    def arrived(spans: list[SpanRecord]) -> bool:
        both = {"raw-traced-1", "raw-untraced-1"}
        ran = {s.attr("sasfleet.job.id") for s in spans if s.name == "run echo"}
        taken = {  # each process exports on its own schedule: wait for the scheduler's too
            s.attr("sasfleet.job.id")
            for s in spans
            if s.service == "sasfleet-scheduler" and s.name.endswith(".submit")
        }
        return both <= ran and both <= taken

    spans = await otlp.wait_for(arrived, timeout=20, what="both raw jobs' spans")
    traced = [s for s in spans if s.trace_id == sender_trace]
    intake = one(traced, service="sasfleet-scheduler", kind=CONSUMER, parent_id=sender_span)
    # A raw publish to the default exchange: the destination is the queue (routing key).
    assert intake.name == f"process {settings.prefix}.submit"
    assert intake.links == [(sender_trace, sender_span)]
    assert intake.attr("sasfleet.job.id") == "raw-traced-1"
    run = one(traced, name="run echo")
    assert run.attr("sasfleet.job.id") == "raw-traced-1"
    assert {s.service for s in traced} == {"sasfleet-scheduler", "sasfleet-agent"}

    # A raw message without a context: the scheduler's consume starts the job's trace, and
    # the job keeps that consume's context.
    own = trace_id_of(untraced.traceparent or "")
    assert own and own != sender_trace
    started = one(spans, trace_id=own, parent_id="")
    assert (started.service, started.kind, started.links) == ("sasfleet-scheduler", CONSUMER, [])
    assert (untraced.traceparent or "").startswith(f"00-{own}-{started.span_id}-")
    assert one(spans, trace_id=own, name="run echo").attr("sasfleet.job.id") == "raw-untraced-1"


async def test_a_supervisor_recovery_is_a_span_of_the_jobs_trace(
    fleet, otlp, start_services, fleet_env, client, jobs
):
    fleet.env.update(otel_env(otlp))
    _scheduler, _supervisor, doomed = start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "2")),
    )
    job_id = "traced-recovery-1"
    submitted = asyncio.create_task(
        submit_from_a_traced_client(
            fleet_env,
            otlp,
            SubmitJob(task="sleep", payload={"seconds": 1.0}, job_id=job_id, max_attempts=3),
        )
    )
    await jobs.status(job_id, "running")
    await jobs.until(
        job_id, lambda v: v.steps[0].status == "running", timeout=20, what="the step runs"
    )
    doomed.signal(signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    fleet.agent(concurrency=2)
    _, status = await submitted
    assert status == "succeeded"

    def recovered(spans: list[SpanRecord]) -> bool:
        names = {s.name for s in spans}
        return (
            {"retry sleep"} <= names
            and any(n.startswith("recover ") for n in names)
            and any(s.name == "run sleep" and s.attr("sasfleet.step.attempt") == 2 for s in spans)
        )

    spans = await otlp.wait_for(recovered, timeout=20, what="the recovery's spans")
    (root,) = [s for s in spans if not s.parent_id]
    assert {s.trace_id for s in spans} == {root.trace_id}
    # The supervisor failed attempt 1 (its lease expired with its agent) and followed the
    # failure with the step's backoff: an error span of the job's trace, publishing nothing.
    recovery = one(spans, service="sasfleet-supervisor", kind=INTERNAL)
    assert recovery.name == "recover lease_expired"
    assert recovery.attr("sasfleet.recovery.kind") == "lease_expired"
    assert recovery.parent_id == root.span_id  # the job's stored traceparent
    assert (recovery.attr("sasfleet.job.id"), recovery.attr("sasfleet.step.index")) == (job_id, 0)
    assert recovery.status == ERROR
    assert recovery.attr("sasfleet.recovery.action") == "retry_later"
    assert not matching(spans, parent_id=recovery.span_id)
    # The scheduler's timer fired the retry: its span joins the job's trace and the
    # dispatch of attempt 2 is published under it.
    retry = one(spans, service="sasfleet-scheduler", kind=INTERNAL, name="retry sleep")
    assert retry.parent_id == root.span_id
    assert retry.attr("sasfleet.step.attempt") == 2
    assert retry.start_ns >= recovery.start_ns
    redispatch = one(spans, parent_id=retry.span_id, kind=PRODUCER)
    assert redispatch.attr("sasfleet.step.attempt") == 2
    second = one(spans, name="run sleep", **{"sasfleet__step__attempt": 2})
    assert spans and by_parent(spans, second) == redispatch.span_id


def by_parent(spans: list[SpanRecord], run: SpanRecord) -> str:
    """The publish span above an attempt's process span."""
    process = next(s for s in spans if s.span_id == run.parent_id)
    return process.parent_id
