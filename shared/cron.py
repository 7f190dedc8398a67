"""Cron expressions (UTC): validation and the next tick, via croniter."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter


def validate(expression: str) -> None:
    """Raise ValueError for an expression croniter cannot use."""
    if not croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression {expression!r}")


def next_tick_ms(expression: str, after_ms: int) -> int:
    """The first tick strictly after ``after_ms`` (epoch ms, UTC)."""
    start = datetime.fromtimestamp(after_ms / 1000, UTC)
    tick: datetime = croniter(expression, start).get_next(datetime)
    return int(tick.timestamp() * 1000)
