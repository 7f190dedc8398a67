"""Retry decisions and backoff, pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``initial_ms * coefficient**(attempt-1)``, capped at ``max_ms``."""

    max_attempts: int = 3
    initial_ms: int = 500
    coefficient: float = 2.0
    max_ms: int = 30_000

    def should_retry(self, attempt: int, retryable: bool) -> bool:
        """Whether a step whose ``attempt``-th attempt failed gets another one."""
        return retryable and attempt < self.max_attempts

    def delay_ms(self, attempt: int) -> int:
        """The wait before the attempt after ``attempt``."""
        return backoff_ms(attempt, self.initial_ms, self.coefficient, self.max_ms)


def backoff_ms(attempt: int, initial_ms: int, coefficient: float, max_ms: int) -> int:
    """Delay after the ``attempt``-th failure (attempts count from 1)."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    try:
        delay = initial_ms * coefficient ** (attempt - 1)
    except OverflowError:
        return max_ms
    return int(min(delay, max_ms))
