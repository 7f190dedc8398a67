"""Retry decisions and backoff, pure."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``initial_ms * coefficient**(attempt-1)``, capped at ``max_ms``,
    spread by ``jitter`` (a fraction of the delay, both ways). Errors whose type name is in
    ``non_retryable`` are never retried."""

    max_attempts: int = 3
    initial_ms: int = 500
    coefficient: float = 2.0
    max_ms: int = 30_000
    jitter: float = 0.0
    non_retryable: frozenset[str] = field(default_factory=frozenset)

    def should_retry(self, attempt: int, retryable: bool, error_type: str = "") -> bool:
        """Whether a step whose ``attempt``-th attempt failed gets another one."""
        return retryable and error_type not in self.non_retryable and attempt < self.max_attempts

    def delay_ms(self, attempt: int, rand: Callable[[], float] = random.random) -> int:
        """The wait before the attempt after ``attempt`` (jitter drawn from ``rand``)."""
        delay = backoff_ms(attempt, self.initial_ms, self.coefficient, self.max_ms)
        if self.jitter:
            delay = int(delay * (1 + self.jitter * (2 * rand() - 1)))
        return max(0, delay)

    def next_delay_ms(
        self,
        attempt: int,
        retryable: bool,
        error_type: str,
        retry_after_ms: int | None = None,
        rand: Callable[[], float] = random.random,
    ) -> int | None:
        """The delay before the next attempt, or None when the step gets no further attempt.

        ``retry_after_ms`` (a handler's explicit request) replaces the backoff.
        """
        if not self.should_retry(attempt, retryable, error_type):
            return None
        return retry_after_ms if retry_after_ms is not None else self.delay_ms(attempt, rand)


def backoff_ms(attempt: int, initial_ms: int, coefficient: float, max_ms: int) -> int:
    """Delay after the ``attempt``-th failure (attempts count from 1)."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    try:
        delay = initial_ms * coefficient ** (attempt - 1)
    except OverflowError:
        return max_ms
    return int(min(delay, max_ms))
