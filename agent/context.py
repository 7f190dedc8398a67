"""What a handler knows about the attempt it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StepContext:
    """The attempt a handler runs.

    ``idempotency_key`` is the same across attempts of the step: use it to de-duplicate
    side effects. ``fencing_token`` (the lease) only grows: hand it to systems you write to
    so they can refuse a write from a superseded attempt. Before an irreversible act, ask
    ``await ctx.lease_is_current()``.
    """

    job_id: str
    step: int
    task: str
    attempt: int
    fencing_token: int
    idempotency_key: str
    agent_id: str
    _lease_check: Callable[[], Awaitable[bool]] = field(repr=False)

    async def lease_is_current(self) -> bool:
        """Whether this attempt still holds the step (False: it was taken over)."""
        return await self._lease_check()
