"""The agent's concurrency slots, served high-priority deliveries first."""

from __future__ import annotations

import asyncio
from collections import deque


class PrioritySlots:
    """A semaphore of ``size`` slots whose waiters for high-priority work go first.

    Deliveries of both pool queues wait here (unacked) until a slot frees; the high queue's
    waiters are served before the normal queue's, so high-priority steps overtake a backlog.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}

    async def acquire(self, high: bool = False) -> None:
        if self.free > 0 and not self._waiters[True] and not self._waiters[False]:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[high].append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                self._waiters[high].remove(future)
            raise

    def release(self) -> None:
        for queue in (self._waiters[True], self._waiters[False]):
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)
                    return
        self.free += 1

    @property
    def waiting(self) -> int:
        return len(self._waiters[True]) + len(self._waiters[False])
