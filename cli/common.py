"""What the operator commands share: running a coroutine, JSON output, a Redis connection,
times and durations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec

from sasfleet.shared.config import Settings

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` to its end in a new event loop."""
    return asyncio.run(coro)  # type: ignore[arg-type]


def json_out(value: Any) -> None:
    """Print ``value`` as indented JSON (the stable ``--json`` form of every command)."""
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2))


async def with_redis(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``await fn(redis)`` on a connection of its own, closed afterwards."""
    from sasfleet.shared.state.connection import redis_for

    redis = redis_for(settings)
    try:
        return await fn(redis)
    finally:
        await redis.aclose()


def iso(ms: int | None) -> str:
    """A time in ms since the epoch as ISO 8601 (UTC); ``-`` for none."""
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d``, ``250ms`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m, 2h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
