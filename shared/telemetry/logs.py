"""Structured logs: JSON lines when not on a terminal, readable text when on one.

Every line carries the service and instance id; and, where known, the job id, step,
attempt, lease and task, and the trace and span ids. A call may pass those in ``extra``;
more often they come from :func:`job_scope`, which a service opens while it works on a
job (its values flow into tasks started inside it), and from the current span.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from sasfleet.shared.telemetry import tracing

_CONTEXT_FIELDS = (
    "job_id",
    "step",
    "attempt",
    "lease",
    "task",
    "message_id",
    "trace_id",
    "span_id",
)
_json = msgspec.json.Encoder()
_scope: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "sasfleet_log_scope", default=None
)


@contextmanager
def job_scope(
    job_id: str,
    step: int | None = None,
    *,
    attempt: int | None = None,
    lease: int | None = None,
    task: str | None = None,
) -> Iterator[None]:
    """Log lines inside the block (and in tasks it starts) carry these job fields, and the
    current span (if tracing) gets them as attributes."""
    fields = {
        k: v
        for k, v in (
            ("job_id", job_id),
            ("step", step),
            ("attempt", attempt),
            ("lease", lease),
            ("task", task),
        )
        if v is not None
    }
    if tracing.active():
        tracing.annotate(
            tracing.job_attributes(job_id, step, task=task, attempt=attempt, lease=lease)
        )
    outer = _scope.get()
    token = _scope.set({**outer, **fields} if outer else fields)
    try:
        yield
    finally:
        _scope.reset(token)


class ContextFilter(logging.Filter):
    """Adds the job scope's fields and the current trace/span ids to each record (a field
    the call passed in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        if scope:
            for name, value in scope.items():
                if record.__dict__.get(name) is None:
                    record.__dict__[name] = value
        if record.__dict__.get("trace_id") is None:
            traceparent = tracing.current_traceparent()
            if traceparent:
                record.trace_id = traceparent[3:35]
                record.span_id = traceparent[36:52]
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value for name in _CONTEXT_FIELDS if (value := record.__dict__.get(name)) is not None
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, instance, logger, msg, context, exc."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "instance": self.instance,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, the context as ``key=value`` at the end."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__(
            f"%(asctime)s %(levelname)-7s {service} [{instance}] %(name)s: %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if "trace_id" in context:
            context.pop("span_id", None)
        if not context:
            return line
        tail = " ".join(f"{k}={v}" for k, v in context.items())
        head, sep, rest = line.partition("\n")  # a traceback stays below the context
        return f"{head}  [{tail}]{sep}{rest}"


def setup_logging(service: str, instance: str, level: str = "INFO") -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(TextFormatter(service, instance))
    else:
        handler.setFormatter(JsonFormatter(service, instance))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika logs every reconnect attempt at ERROR with a traceback; one line is enough.
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
