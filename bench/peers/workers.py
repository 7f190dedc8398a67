"""What every peer's target holds: its worker processes and its completion watcher."""

from __future__ import annotations

import asyncio

from bench.peers.watch import Watcher
from bench.procs import Worker, stop_all, tree


class PeerWorkers:
    """The worker processes of a peer (stopped by PID) and the watcher of its results."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.watcher: Watcher | None = None

    def process_groups(self) -> dict[str, list[int]]:
        return {"worker": [p for w in self.workers for p in tree(w.pid)]}

    async def stop_workers(self) -> None:
        """Stop the workers and the watcher (what every peer's ``close`` starts with)."""
        await asyncio.to_thread(stop_all, self.workers)
        if self.watcher is not None:
            await self.watcher.stop()
