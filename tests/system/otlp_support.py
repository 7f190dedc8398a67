"""An OTLP/HTTP trace receiver for the tracing tests: spans exported by real processes
are decoded with ``opentelemetry-proto`` and can be waited for and queried."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

PRODUCER, CONSUMER, INTERNAL, CLIENT = (
    PbSpan.SPAN_KIND_PRODUCER,
    PbSpan.SPAN_KIND_CONSUMER,
    PbSpan.SPAN_KIND_INTERNAL,
    PbSpan.SPAN_KIND_CLIENT,
)
ERROR = PbStatus.STATUS_CODE_ERROR


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class SpanRecord:
    """One received span, decoded."""

    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str]]
    start_ns: int

    def attr(self, key: str) -> Any:
        return self.attributes.get(key)


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (POST /v1/traces, protobuf)."""

    spans: list[SpanRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        decoded = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    decoded.append(
                        SpanRecord(
                            service=str(resource.get("service.name", "")),
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            name=s.name,
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                            status_message=s.status.message,
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in s.events
                            ],
                            links=[(lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links],
                            start_ns=s.start_time_unix_nano,
                        )
                    )
        with self.lock:
            self.spans.extend(decoded)

    def snapshot(self) -> list[SpanRecord]:
        with self.lock:
            return list(self.spans)

    async def wait_for(self, check: Any, *, timeout: float, what: str) -> list[SpanRecord]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if check(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({(s.service, s.name) for s in spans})
                pytest.fail(f"timed out waiting for {what}; received {len(spans)}: {names}")
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def serve_otlp() -> Iterator[OtlpReceiver]:
    """A receiver listening on a free port of 127.0.0.1 until the block ends."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                receiver.add(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
            else:
                reply = b""
                self.send_response(404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    """What points a process's traces at the receiver (the standard variables only)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def one(spans: list[SpanRecord], **match: Any) -> SpanRecord:
    found = matching(spans, **match)
    assert len(found) == 1, (match, [(s.service, s.name, s.attributes) for s in found])
    return found[0]


def matching(spans: list[SpanRecord], **match: Any) -> list[SpanRecord]:
    def ok(s: SpanRecord) -> bool:
        for key, want in match.items():
            have = getattr(s, key) if hasattr(s, key) else s.attr(key.replace("__", "."))
            if have != want:
                return False
        return True

    return [s for s in spans if ok(s)]


def attempt_span(spans: list[SpanRecord], step: int, attempt: int) -> SpanRecord:
    found = [
        s
        for s in spans
        if s.kind == INTERNAL
        and s.attr("sasfleet.step.index") == step
        and s.attr("sasfleet.step.attempt") == attempt
        and s.service == "sasfleet-agent"
    ]
    assert len(found) == 1, (step, attempt, [(s.name, s.attributes) for s in found])
    return found[0]
