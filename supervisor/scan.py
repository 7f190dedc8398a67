"""The deadline scan: each tick, take the due entries and recover them."""

from __future__ import annotations

import asyncio
import logging

from sasfleet.shared.state.keys import parse_deadline_member
from sasfleet.shared.state.store import StateStore
from sasfleet.supervisor.recovery import Recovery

log = logging.getLogger(__name__)


class DeadlineScan:
    """Reads due deadlines; each recovery is claimed atomically by the store, so several
    supervisors scanning the same set never recover one step twice."""

    def __init__(
        self, store: StateStore, recovery: Recovery, batch: int, concurrency: int = 32
    ) -> None:
        self.store = store
        self.recovery = recovery
        self.batch = batch
        self.limit = asyncio.Semaphore(concurrency)

    async def tick(self) -> bool:
        """One scan; True when the batch was full (more may be due: scan again at once)."""
        due = await self.store.due(self.batch)
        if due:
            await asyncio.gather(*(self._one(member) for member in due))
        return len(due) == self.batch

    async def _one(self, member: str) -> None:
        async with self.limit:
            try:
                job_id, step = parse_deadline_member(member)
            except ValueError:
                log.error("ignoring a malformed deadline entry %r", member)
                return
            try:
                await self.recovery.recover(job_id, step)
            except Exception:
                log.exception(
                    "recovery of %s failed; it stays due and is retried",
                    member,
                    extra={"job_id": job_id, "step": step},
                )
