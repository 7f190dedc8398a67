"""When each job was submitted and when the producer learned it ended.

Completions may be reported before the submission they belong to has returned (a result
can be published before the publisher confirm arrives), so a completion is kept whether
or not its job is expected yet; extra ones (a chain's inner steps) are simply never asked
about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable


class Tracker:
    """Submit and completion times (``time.perf_counter``) of one run's jobs."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.failed: set[str] = set()
        self._pending: set[str] = set()
        self._progress = asyncio.Event()

    def expect(self, handle: str, started: float) -> None:
        """A job was submitted at ``started``; wait for it."""
        self.started[handle] = started
        if handle not in self.finished:
            self._pending.add(handle)

    def finish(self, handle: str, ok: bool = True, at: float | None = None) -> None:
        """The producer learned that the job ``handle`` ended (``ok``: it succeeded)."""
        if handle in self.finished:
            return
        self.finished[handle] = time.perf_counter() if at is None else at
        if not ok:
            self.failed.add(handle)
        self._pending.discard(handle)
        self._progress.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait(self, stall_timeout_s: float) -> bool:
        """Wait until every expected job ended; False when none ended for
        ``stall_timeout_s`` while some were still pending."""
        while self._pending:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), stall_timeout_s)
            except TimeoutError:
                return False
        return True

    def done(self, handles: Iterable[str]) -> list[str]:
        """Those of ``handles`` whose end was seen."""
        return [h for h in handles if h in self.finished]

    def latencies(self, handles: Iterable[str]) -> list[float]:
        """Submit-to-completion seconds of those of ``handles`` that ended."""
        return [self.finished[h] - self.started[h] for h in handles if h in self.finished]

    def last(self, handles: Iterable[str]) -> float:
        """When the last of ``handles`` that ended was seen (0.0 if none was)."""
        return max((self.finished[h] for h in handles if h in self.finished), default=0.0)

    def first(self, handles: Iterable[str]) -> float:
        """When the first of ``handles`` that ended was seen (0.0 if none was)."""
        return min((self.finished[h] for h in handles if h in self.finished), default=0.0)
