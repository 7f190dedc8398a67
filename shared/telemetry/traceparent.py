"""W3C ``traceparent`` values as text: validate and take apart (pure, no OpenTelemetry).

The job's traceparent is stored in Redis and shown by the CLI, which must not pay for
importing the tracing SDK to print a trace id.
"""

from __future__ import annotations

import re

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# version 00: 2 hex version, 32 hex trace id, 16 hex parent id, 2 hex flags. Later versions
# may append fields after another dash; the first four keep their meaning.
_PATTERN = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def is_valid(value: str) -> bool:
    """Whether ``value`` is a usable W3C traceparent (all-zero ids and version ff are not)."""
    match = _PATTERN.match(value.strip().lower()) if value else None
    if match is None:
        return False
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return False
    return trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN


def trace_id(value: str) -> str:
    """The 32-hex trace id of a traceparent ("" when it is not a valid one)."""
    return value.strip().lower()[3:35] if is_valid(value) else ""


def format_traceparent(trace: int, span: int, flags: int) -> str:
    """A version-00 traceparent from numeric ids and trace flags (bit 0: sampled)."""
    return f"00-{trace:032x}-{span:016x}-{flags & 0xFF:02x}"
