"""Queue depths for gauges and ``sasfleet top``: passive declares on a channel of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError


class QueueMonitor:
    """Reads ready messages and consumers of queues over the connection ``connection()``
    returns (None: not connected)."""

    def __init__(self, connection: Callable[[], AbstractRobustConnection | None]) -> None:
        self._connection = connection
        self._monitor: AbstractChannel | None = None

    async def depths(self, queues: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Ready messages and consumers of each existing queue, by passive declare.

        A passive declare of a missing queue closes its channel, so this runs on a channel
        of its own (reopened when that happens), never on the publishing channel."""
        connection = self._connection()
        if connection is None:
            return {}
        depths: dict[str, tuple[int, int]] = {}
        for name in queues:
            if self._monitor is None or self._monitor.is_closed:
                self._monitor = await connection.channel(publisher_confirms=False)
            try:
                queue = await self._monitor.declare_queue(name, passive=True, robust=False)  # type: ignore[call-arg]
            except AMQPError:
                self._monitor = None  # the broker closed the channel: the queue is missing
                continue
            result = queue.declaration_result
            depths[name] = (int(result.message_count or 0), int(result.consumer_count or 0))
        return depths

    async def close(self) -> None:
        """Close the channel :meth:`depths` uses, if open."""
        if self._monitor is not None and not self._monitor.is_closed:
            with contextlib.suppress(Exception):
                await self._monitor.close()
        self._monitor = None
