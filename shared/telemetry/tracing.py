"""Tracing: one trace per job across processes, W3C context in AMQP headers, OTLP export.

Tracing is off unless the standard ``OTEL_*`` variables ask for it (see :func:`configured`).
Off costs one boolean check per message: every helper then hands back :data:`NO_SPAN`, a
shared no-op, and no context is extracted or injected beyond copying a stored traceparent.

A process that never calls :func:`setup_tracing` (an application using the Python client)
follows whatever global ``TracerProvider`` the application installed: its publish spans
then join the application's own traces.

Span layout (names and kinds follow the OpenTelemetry messaging conventions):

- ``publish <destination>`` (PRODUCER) for every confirmed publish; its context is what
  travels in the message's ``traceparent``/``tracestate`` headers.
- ``process <destination>`` (CONSUMER) for every delivery, parented on the producer's
  context and linked to it (the conventions' creation-context link).
- INTERNAL spans for the fleet's own work on a job: an agent's attempt (``run TASK`` /
  ``compensate TASK``, the handler's spans nest under it), a retry timer firing, a
  supervisor recovery. Work that starts without a delivery (timers, recoveries) is
  parented on the job's traceparent stored in Redis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from importlib import metadata
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from sasfleet.shared.telemetry.traceparent import TRACEPARENT, format_traceparent, is_valid

log = logging.getLogger(__name__)

Attributes = Mapping[str, AttributeValue]

# The fleet's own span attributes (the messaging ones come from the semantic conventions).
JOB_ID = "sasfleet.job.id"
STEP_INDEX = "sasfleet.step.index"
TASK_NAME = "sasfleet.task.name"
ATTEMPT = "sasfleet.step.attempt"
LEASE = "sasfleet.step.lease"
AGENT_ID = "sasfleet.agent.id"
COMPENSATES = "sasfleet.step.compensates"
JOB_STATUS = "sasfleet.job.status"
OUTCOME = "sasfleet.outcome"

_TRACER_NAME = "sasfleet"
# None: not decided in this process (a library user's app: follow the global provider).
_enabled: bool | None = None
_provider: Any = None


def configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTel variables ask for traces: an OTLP endpoint or an explicit
    ``OTEL_TRACES_EXPORTER`` (not ``none``), and the SDK not disabled."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(
        exporters
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_tracing(service: str, instance: str) -> bool:
    """Decide for this process: when :func:`configured`, install an SDK tracer provider that
    exports over OTLP (and instrument Redis); else turn tracing off. Returns whether on."""
    global _enabled, _provider
    if _enabled is not None:
        return _enabled
    if not configured():
        _enabled = False
        return False
    from sasfleet.shared.telemetry.export import build_provider

    _provider = build_provider(service, instance)
    trace.set_tracer_provider(_provider)
    _enabled = True
    log.info("tracing on: spans of %s are exported over OTLP", service)
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (a service calls this when it stops)."""
    if _provider is not None:
        _provider.shutdown()


def active() -> bool:
    """Whether spans are recorded in this process (cheap: one check once decided)."""
    if _enabled is not None:
        return _enabled
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


_tracers: dict[int, trace.Tracer] = {}


def _tracer() -> trace.Tracer:
    """The fleet's tracer from the current global provider (cached: looking the package
    version up costs milliseconds, far too much per span)."""
    provider = trace.get_tracer_provider()
    tracer = _tracers.get(id(provider))
    if tracer is None:
        tracer = _tracers[id(provider)] = provider.get_tracer(_TRACER_NAME, _version())
    return tracer


def _version() -> str:
    try:
        return metadata.version("sasfleet")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


class Traced:
    """A span the fleet started, or none (tracing off). ``with traced:`` makes it current
    and ends it; an exception escaping the block is recorded and marks it as an error."""

    __slots__ = ("_token", "span")

    def __init__(self, span: trace.Span | None) -> None:
        self.span = span
        self._token: object | None = None

    def __enter__(self) -> Traced:
        if self.span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.span is None:
            return
        if exc is not None and isinstance(exc, Exception):
            self.error(f"{type(exc).__name__}: {exc}", exc)
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self.span.end()

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make the span current for a block without ending it (work that continues in a
        task created inside the block nests under it)."""
        if self.span is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            yield
        finally:
            otel_context.detach(token)

    def set(self, attributes: Attributes) -> None:
        """Add attributes to the span."""
        if self.span is not None:
            self.span.set_attributes(attributes)

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        """Add a timestamped event to the span."""
        if self.span is not None:
            self.span.add_event(name, attributes)

    def error(
        self, description: str, exc: BaseException | None = None, error_type: str = ""
    ) -> None:
        """Mark the span failed: status ERROR, ``error.type``, and the exception if any."""
        if self.span is None:
            return
        self.span.set_status(Status(StatusCode.ERROR, description[:500]))
        self.span.set_attribute(
            "error.type", error_type or (type(exc).__name__ if exc else "error")
        )
        if exc is not None:
            self.span.record_exception(exc)

    def exception(self, exc: BaseException) -> None:
        """Record an exception on the span (its status is set by :meth:`error`)."""
        if self.span is not None:
            self.span.record_exception(exc)

    def end(self) -> None:
        """End the span (for one that is activated rather than entered)."""
        if self.span is not None:
            self.span.end()

    @property
    def traceparent(self) -> str:
        """The span's context as a W3C traceparent ("" for none)."""
        return _traceparent_of(self.span) if self.span is not None else ""


NO_SPAN = Traced(None)


def _traceparent_of(span: trace.Span) -> str:
    sc = span.get_span_context()
    if not sc.is_valid:
        return ""
    return format_traceparent(sc.trace_id, sc.span_id, int(sc.trace_flags))


def current_traceparent() -> str:
    """The current span's context as a traceparent ("" when none or tracing is off)."""
    if not active():
        return ""
    return _traceparent_of(trace.get_current_span())


def current() -> Traced:
    """The current span (to add attributes or events), or :data:`NO_SPAN`."""
    if not active():
        return NO_SPAN
    span = trace.get_current_span()
    return Traced(span) if span.is_recording() else NO_SPAN


def annotate(attributes: Attributes) -> None:
    """Add attributes to the current span, if one records."""
    if active():
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)


def job_attributes(
    job_id: str,
    step: int | None = None,
    *,
    task: str | None = None,
    attempt: int | None = None,
    lease: int | None = None,
    agent: str | None = None,
    compensates: int | None = None,
) -> dict[str, AttributeValue]:
    """The fleet's attributes of a job, its step and attempt (those that are known)."""
    attributes: dict[str, AttributeValue] = {JOB_ID: job_id}
    for key, value in (
        (STEP_INDEX, step),
        (TASK_NAME, task),
        (ATTEMPT, attempt),
        (LEASE, lease),
        (AGENT_ID, agent),
        (COMPENSATES, compensates),
    ):
        if value is not None:
            attributes[key] = value
    return attributes


def _parent_context(traceparent: str) -> otel_context.Context | None:
    """The current context when a span is current, else the stored ``traceparent``'s."""
    if trace.get_current_span().get_span_context().is_valid:
        return None  # the current context
    if traceparent and is_valid(traceparent):
        return propagate.extract({TRACEPARENT: traceparent})
    return None


def job_span(
    name: str,
    attributes: Attributes,
    *,
    traceparent: str = "",
    start_ns: int | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Traced:
    """An INTERNAL span of a job's trace: a child of the current span, else of the job's
    stored ``traceparent`` (timers and recoveries start without a delivery). Not current
    until entered (``with``) or activated (:meth:`Traced.current`)."""
    if not active():
        return NO_SPAN
    span = _tracer().start_span(
        name,
        context=_parent_context(traceparent),
        kind=kind,
        attributes=attributes,
        start_time=start_ns,
    )
    return Traced(span)


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP headers, whose text values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return [value] if isinstance(value, str) and value else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def inject(headers: MutableMapping[str, Any], traced: Traced) -> None:
    """Write ``traced``'s context into message headers (W3C traceparent/tracestate)."""
    if traced.span is not None:
        propagate.inject(headers, context=trace.set_span_in_context(traced.span))


def extract(headers: Mapping[str, Any]) -> otel_context.Context:
    """The context a message carries in its headers (empty when none)."""
    return propagate.extract(headers, getter=_GETTER)


def producer_span(
    name: str,
    attributes: Attributes,
    headers: MutableMapping[str, Any],
    *,
    traceparent: str = "",
) -> Traced:
    """A PRODUCER span for one publish, its context injected into ``headers``. Its parent
    is the current span, else the job's stored ``traceparent``, else none (a new trace)."""
    span = _tracer().start_span(
        name, context=_parent_context(traceparent), kind=SpanKind.PRODUCER, attributes=attributes
    )
    traced = Traced(span)
    inject(headers, traced)
    return traced


def consumer_span(name: str, attributes: Attributes, headers: Mapping[str, Any]) -> Traced:
    """A CONSUMER span for one delivery: a child of the producer's context carried in
    ``headers`` (so a job stays one trace across processes) and linked to it, as the
    messaging conventions ask of a process span; a new trace when the message carried
    none."""
    parent = extract(headers)
    producer = trace.get_current_span(parent).get_span_context()
    links = [Link(producer)] if producer.is_valid else None
    span = _tracer().start_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    )
    return Traced(span)
