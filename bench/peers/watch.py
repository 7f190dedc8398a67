"""Learns that peers' jobs ended from Redis pub/sub, right after the worker stored the
result: Celery's Redis backend publishes every stored result on the key's own channel;
the Dramatiq and taskiq worker apps publish ``"<id> ok|error"`` on the run's channel from
a middleware that runs after the library stored the result and before the ack.

Polling each job's key instead would cost a Redis round trip per pending job per poll and
add the poll interval to every latency, so the push is the fair way for every library.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from bench.tracker import Tracker

# (channel, data) -> (job handle, succeeded), or None for messages to ignore.
Parser = Callable[[bytes, bytes], "tuple[str, bool] | None"]


def parse_done(channel: bytes, data: bytes) -> tuple[str, bool] | None:
    """``"<id> ok"`` / ``"<id> error"`` as the Dramatiq and taskiq apps publish it."""
    handle, _, status = data.decode().partition(" ")
    return (handle, status == "ok") if handle else None


class Watcher:
    """Subscribes before the first submission and feeds a :class:`Tracker`."""

    def __init__(self, redis_url: str, tracker: Tracker, parse: Parser) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.tracker = tracker
        self.parse = parse
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, channel: str = "", pattern: str = "") -> None:
        """Subscribe to ``channel`` or ``pattern`` and wait until Redis confirmed it."""
        self._pubsub = self.redis.pubsub()
        if pattern:
            await self._pubsub.psubscribe(pattern)
        else:
            await self._pubsub.subscribe(channel)
        while True:
            message = await self._pubsub.get_message(timeout=5.0)
            if message is not None and message["type"] in ("subscribe", "psubscribe"):
                break
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        assert self._pubsub is not None
        async for message in self._pubsub.listen():
            if message["type"] not in ("message", "pmessage"):
                continue
            parsed = self.parse(message["channel"], message["data"])
            if parsed is not None:
                self.tracker.finish(*parsed)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()
