"""What a handler knows about the attempt it runs, and what it may ask of the fleet."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sasfleet.shared.messages.codec import encode


@dataclass(slots=True)
class StepContext:
    """The attempt a handler runs.

    ``idempotency_key`` is the same across attempts of the step: use it to de-duplicate
    side effects. ``fencing_token`` (the lease) only grows: hand it to systems you write to
    so they can refuse a write from a superseded attempt. Before an irreversible act, ask
    ``await ctx.lease_is_current()``. A compensation has ``compensates`` set to the step it
    undoes; ``await ctx.compensated_result()`` is that step's result.
    """

    job_id: str
    step: int
    task: str
    attempt: int
    fencing_token: int
    idempotency_key: str
    agent_id: str
    compensates: int | None = None
    _lease_check: Callable[[], Awaitable[bool]] = field(repr=False, default=None)  # type: ignore[assignment]
    _results: Callable[[range], Awaitable[list[Any]]] = field(repr=False, default=None)  # type: ignore[assignment]
    cancel_requested: bool = False
    last_heartbeat: float = field(default_factory=time.monotonic)
    progress: bytes = b""

    async def lease_is_current(self) -> bool:
        """Whether this attempt still holds the step (False: it was taken over)."""
        return await self._lease_check()

    async def results(self) -> list[Any]:
        """The results of the job's earlier steps, in order (for a compensation: of the
        steps before the one it undoes, and that one)."""
        upto = self.compensates + 1 if self.compensates is not None else self.step
        return await self._results(range(upto))

    async def compensated_result(self) -> Any:
        """The result of the step this compensation undoes."""
        if self.compensates is None:
            raise RuntimeError("not a compensation")
        return (await self._results(range(self.compensates, self.compensates + 1)))[0]

    def heartbeat(self, details: Any = None) -> None:
        """Report that the handler is alive (and, optionally, its progress, shown by
        ``sasfleet job show``). Required within the step's heartbeat timeout, if it has one.
        Safe to call from a plain function's thread."""
        self.last_heartbeat = time.monotonic()
        if details is not None:
            self.progress = encode(details)
