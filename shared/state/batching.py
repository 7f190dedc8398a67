"""Runs the store's Lua scripts, sending the calls made in one event-loop iteration to Redis
together, in one pipeline.

A busy service has many script calls in flight at once (a scheduler creating the jobs of a
batch, an agent claiming a burst of deliveries). One by one, each costs a socket write and
a read; together they cost one of each. A call waits at most until the loop has run the
callbacks already queued, so a lone call is not delayed.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from sasfleet.shared.state.connection import RedisClient

_Call = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


class BatchedScripts:
    """Calls scripts by name (EVALSHA, loading a script the server does not know)."""

    def __init__(self, redis: RedisClient, sources: dict[str, str]) -> None:
        self.redis = redis
        self.sources = sources
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in sources.items()}
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references until done

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name``; its reply, or the error Redis answered with."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((name, keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                name, keys, args, _ = batch[0]
                replies: list[Any] = [await self._one(name, keys, args)]
            else:
                replies = await self._pipelined(batch)
        except BaseException as exc:  # the connection failed (after redis-py's retries)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _one(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.evalsha(self.shas[name], len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted, or its script cache was flushed
            await self.redis.script_load(self.sources[name])
            return await self.redis.evalsha(self.shas[name], len(keys), *keys, *args)

    async def _pipelined(self, batch: list[_Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, keys, args, _ in batch:
                pipe.execute_command("EVALSHA", self.shas[name], len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                name, keys, args, _ = batch[i]
                replies[i] = await self._one(name, keys, args)
        return replies
