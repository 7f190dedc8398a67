"""Tracing helpers with the SDK's in-memory exporter: span kinds, names, parents, links,
W3C headers, the job's stored traceparent, and nothing at all when tracing is off."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.state.records import FollowUp
from sasfleet.shared.telemetry import export, tracing
from sasfleet.shared.telemetry.messaging import (
    consumer_destination,
    process_span,
    producer_destination,
    publish_span,
)
from sasfleet.shared.telemetry.traceparent import format_traceparent, is_valid, trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
STORED = f"00-{TRACE}-{SPAN}-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (the process's global provider is left alone)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_enabled", True)
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("test"))
    yield memory
    provider.shutdown()


@pytest.fixture
def tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_enabled", False)


def hexes(span: ReadableSpan) -> tuple[str, str, str]:
    ctx = span.get_span_context()
    parent = span.parent.span_id if span.parent is not None else 0
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{parent:016x}" if parent else ""


def publish(headers: dict[str, object], **kwargs: object) -> tracing.Traced:
    return publish_span(
        "fleet",
        "fleet.pool.default",
        headers,
        message_id="j1:0:1",
        correlation_id=None,
        body_size=42,
        server=("rabbit", 5672),
        **kwargs,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- traceparent


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (STORED, True),
        (f"00-{TRACE}-{SPAN}-03", True),
        (f"01-{TRACE}-{SPAN}-01-future", True),
        (f"00-{TRACE}-{SPAN}-01-extra", False),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{SPAN}-01", False),
        (f"00-{'0' * 32}-{SPAN}-01", False),
        (f"00-{TRACE}-{'0' * 16}-01", False),
        (f"00-{TRACE[:-1]}-{SPAN}-01", False),
        ("garbage", False),
        ("", False),
    ],
)
def test_traceparent_validation(value: str, valid: bool) -> None:
    assert is_valid(value) is valid
    assert trace_id(value) == (TRACE if valid else "")


def test_format_traceparent_keeps_the_flags() -> None:
    assert format_traceparent(int(TRACE, 16), int(SPAN, 16), 1) == STORED
    assert format_traceparent(int(TRACE, 16), int(SPAN, 16), 3).endswith("-03")


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask(env: dict[str, str], on: bool) -> None:
    assert tracing.configured(env) is on


def test_setup_without_configuration_turns_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.setattr(tracing, "_enabled", None)
    assert tracing.setup_tracing("scheduler", "scheduler-1") is False
    assert tracing.active() is False
    assert tracing.current_traceparent() == ""


def test_service_name_defaults_to_the_role_unless_otel_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    resource = export._resource("agent", "agent-1")
    assert resource.attributes["service.name"] == "sasfleet-agent"
    assert resource.attributes["service.instance.id"] == "agent-1"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments-agents")
    assert export._resource("agent", "agent-1").attributes["service.name"] == "payments-agents"


def test_exporter_follows_the_otlp_protocol_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    (http,) = export._exporters()
    assert type(http).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    (grpc,) = export._exporters()
    assert type(grpc).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert len(export._exporters()) == 2
    for exp in (http, grpc):
        exp.shutdown()


# --------------------------------------------------------------------------- messaging


@pytest.mark.parametrize(
    ("exchange", "routing_key", "name"),
    [
        ("fleet", "fleet.submit", "fleet:fleet.submit"),
        ("", "fleet.submit", "fleet.submit"),
        ("logs", "", "logs"),
        ("", "", "amq.default"),
    ],
)
def test_producer_destination(exchange: str, routing_key: str, name: str) -> None:
    assert producer_destination(exchange, routing_key) == name


@pytest.mark.parametrize(
    ("exchange", "routing_key", "queue", "name"),
    [
        ("fleet", "fleet.pool.a", "fleet.pool.a", "fleet:fleet.pool.a"),
        ("", "fleet.submit", "fleet.submit", "fleet.submit"),
        ("direct_logs", "warning", "my_queue", "direct_logs:warning:my_queue"),
    ],
)
def test_consumer_destination(exchange: str, routing_key: str, queue: str, name: str) -> None:
    assert consumer_destination(exchange, routing_key, queue) == name


def test_a_publish_without_context_starts_a_trace_and_injects_it(
    exporter: InMemorySpanExporter,
) -> None:
    headers: dict[str, object] = {}
    with publish(headers, attributes=tracing.job_attributes("j1", 0, attempt=1)) as span:
        assert span.traceparent
    (done,) = exporter.get_finished_spans()
    trace, span_id, parent = hexes(done)
    assert parent == ""
    assert done.kind == SpanKind.PRODUCER
    assert done.name == "publish fleet:fleet.pool.default"
    assert headers["traceparent"] == f"00-{trace}-{span_id}-{int(done.context.trace_flags):02x}"
    assert dict(done.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": "fleet:fleet.pool.default",
        "messaging.rabbitmq.destination.routing_key": "fleet.pool.default",
        "messaging.message.id": "j1:0:1",
        "messaging.message.body.size": 42,
        "server.address": "rabbit",
        "server.port": 5672,
        "sasfleet.job.id": "j1",
        "sasfleet.step.index": 0,
        "sasfleet.step.attempt": 1,
    }


def test_a_publish_without_a_current_span_continues_the_jobs_stored_trace(
    exporter: InMemorySpanExporter,
) -> None:
    with publish({}, traceparent=STORED):
        pass
    (done,) = exporter.get_finished_spans()
    trace, _, parent = hexes(done)
    assert (trace, parent) == (TRACE, SPAN)


def test_a_current_span_wins_over_the_stored_traceparent(exporter: InMemorySpanExporter) -> None:
    with tracing.job_span("retry echo", {}) as outer, publish({}, traceparent=STORED):
        pass
    publish_done, outer_done = exporter.get_finished_spans()
    assert hexes(publish_done)[2] == hexes(outer_done)[1]
    assert hexes(outer_done)[2] == ""  # no stored context given to the outer span
    assert outer.span is not None


def test_a_consumer_span_is_the_producers_child_and_links_to_it(
    exporter: InMemorySpanExporter,
) -> None:
    headers: dict[str, object] = {"tracestate": "vendor=opaque"}
    with publish(headers):
        pass
    # AMQP headers may arrive as bytes.
    received = {k: (v.encode() if isinstance(v, str) else v) for k, v in headers.items()}
    with process_span(
        "fleet.pool.default",
        "fleet",
        "fleet.pool.default",
        received,
        message_id="j1:0:1",
        correlation_id="c1",
        body_size=42,
        delivery_tag=7,
        redelivered=True,
    ):
        pass
    producer, consumer = exporter.get_finished_spans()
    p_trace, p_span, _ = hexes(producer)
    c_trace, _, c_parent = hexes(consumer)
    assert (c_trace, c_parent) == (p_trace, p_span)
    assert consumer.kind == SpanKind.CONSUMER
    assert consumer.name == "process fleet:fleet.pool.default"
    (link,) = consumer.links
    assert link.context.span_id == producer.context.span_id
    assert consumer.context.trace_state.get("vendor") == "opaque"
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.rabbitmq.message.delivery_tag"] == 7
    assert attributes["messaging.message.conversation_id"] == "c1"
    assert attributes["sasfleet.redelivered"] is True


def test_a_delivery_without_context_starts_a_new_trace(exporter: InMemorySpanExporter) -> None:
    with process_span(
        "q",
        "",
        "q",
        {"traceparent": "garbage"},
        message_id=None,
        correlation_id=None,
        body_size=1,
        delivery_tag=None,
        redelivered=False,
    ) as span:
        own = tracing.current_traceparent()
    (done,) = exporter.get_finished_spans()
    assert hexes(done)[2] == "" and done.links == ()
    assert own == span.traceparent and trace_id(own) == hexes(done)[0]


def test_errors_are_span_status_and_recorded_exceptions(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.job_span("run charge", {}):
        raise RuntimeError("card declined")
    traced = tracing.job_span("run ship", {})
    traced.error("NonRetryableError: no carrier", error_type="NonRetryableError")
    traced.end()
    failed, marked = exporter.get_finished_spans()
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "RuntimeError: card declined"
    assert [e.name for e in failed.events] == ["exception"]
    assert (failed.attributes or {})["error.type"] == "RuntimeError"
    assert marked.status.status_code == StatusCode.ERROR
    assert (marked.attributes or {})["error.type"] == "NonRetryableError"


def test_current_activates_without_ending(exporter: InMemorySpanExporter) -> None:
    attempt = tracing.job_span("run echo", tracing.job_attributes("j1", 0, agent="agent-1"))
    with attempt.current():
        assert tracing.current().span is attempt.span
        tracing.annotate({"extra": 1})
        with tracing.job_span("handler", {}):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == ["handler"]
    attempt.end()
    handler, run = exporter.get_finished_spans()
    assert hexes(handler)[2] == hexes(run)[1]
    assert (run.attributes or {})["extra"] == 1
    assert (run.attributes or {})["sasfleet.agent.id"] == "agent-1"


def test_with_tracing_off_nothing_is_created_or_injected(tracing_off: None) -> None:
    headers: dict[str, object] = {}
    assert publish(headers, traceparent=STORED) is tracing.NO_SPAN
    assert headers == {}  # the publisher copies the stored traceparent itself
    assert tracing.job_span("x", {}, traceparent=STORED) is tracing.NO_SPAN
    assert tracing.current() is tracing.NO_SPAN
    assert tracing.current_traceparent() == ""
    with tracing.NO_SPAN as span:
        span.error("ignored")
        span.set({"a": 1})
    assert span.traceparent == ""


# --------------------------------------------------------------------------- records


def test_dispatch_orders_carry_the_jobs_traceparent_from_the_script_answer() -> None:
    fields = {"job_id": "j1", "step": 1, "task": "echo", "attempt": "2", "lease": "3"}
    answer = {"kind": "dispatch", **fields, "pool": "default", "priority": "high"}
    answer |= {"traceparent": STORED, "again": False, "message": "{}"}
    # Fields copied from a Redis hash arrive as strings, and are read as numbers.
    order = msgspec.json.Decoder(FollowUp, strict=False).decode(msgspec.json.encode(answer))
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.lease, order.attempt, order.priority) == (1, 3, 2, "high")
    assert order.traceparent == STORED
