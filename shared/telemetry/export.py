"""Building the SDK tracer provider from the standard ``OTEL_*`` variables.

Imported only when tracing is configured, so a process with tracing off never loads the
SDK, the exporters or the instrumentation.

- Exporter: ``OTEL_TRACES_EXPORTER`` (``otlp`` by default; ``console`` for debugging),
  protocol ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``
  (``http/protobuf`` by default, or ``grpc``); endpoint, headers, timeout, compression from
  the exporters' own ``OTEL_EXPORTER_OTLP_*`` variables.
- Sampler: ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (read by the SDK).
- Resource: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win; otherwise the
  service is ``sasfleet-<role>``. The instance id is ``service.instance.id``.
- Batching: ``OTEL_BSP_*`` (read by the SDK's batch span processor).
"""

from __future__ import annotations

import logging
import os

from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

log = logging.getLogger(__name__)


def build_provider(service: str, instance: str) -> TracerProvider:
    """The process's tracer provider, with Redis commands traced inside job spans."""
    resource = _resource(service, instance)
    processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    for exporter in _exporters():
        processor.add_span_processor(BatchSpanProcessor(exporter))
    provider = TracerProvider(resource=resource, active_span_processor=processor)
    _instrument_redis(resource, processor)
    return provider


def _resource(service: str, instance: str) -> Resource:
    from_env = Resource.create({SERVICE_INSTANCE_ID: instance})
    name = str(from_env.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        return from_env.merge(Resource({SERVICE_NAME: f"sasfleet-{service}"}))
    return from_env


def _exporters() -> list[SpanExporter]:
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if n.strip()
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER %r is not supported; use otlp or console", name)
    return exporters


def _otlp_exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not supported; using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument_redis(resource: Resource, processor: SynchronousMultiSpanProcessor) -> None:
    """Trace Redis commands only inside a job's span. The services poll Redis many times a
    second (timers, deadline scans, heartbeats); a span per polling command would start a
    new trace each time and bury the job traces. So the Redis spans get a provider of their
    own whose sampler drops roots and follows the parent otherwise, exporting through the
    same processors."""
    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    if "redis" in {n.strip() for n in disabled.split(",")}:
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    children_only = TracerProvider(
        sampler=ParentBased(root=ALWAYS_OFF),
        resource=resource,
        active_span_processor=processor,
        shutdown_on_exit=False,
    )
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=children_only)
