"""Small broker-side helpers: wait until a queue has its consumers, server versions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aio_pika
import redis.asyncio as aioredis
from aio_pika.exceptions import AMQPError

from bench.procs import Worker


async def consumer_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    """Consumers of ``queue`` now (0 if it does not exist yet)."""
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except AMQPError:
        return -1  # the failed passive declare closed the channel
    return int(declared.declaration_result.consumer_count or 0)


async def wait_for_consumers(
    amqp_url: str,
    queue: str,
    count: int,
    workers: Sequence[Worker],
    timeout_s: float = 120.0,
) -> None:
    """Return once ``queue`` has ``count`` consumers; raise if a worker exits first."""
    deadline = time.monotonic() + timeout_s
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        while True:
            found = await consumer_count(channel, queue)
            if found >= count:
                return
            if found < 0:
                channel = await connection.channel()
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"{w.name} exited with {w.proc.returncode}:\n{w.log_tail()}")
            if time.monotonic() > deadline:
                logs = "\n".join(w.log_tail(1500) for w in workers)
                raise TimeoutError(
                    f"{queue}: {found} of {count} consumers after {timeout_s}s\n{logs}"
                )
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def server_versions(amqp_url: str, redis_url: str) -> dict[str, str]:
    """RabbitMQ's and Redis' versions, as they announce them."""
    versions = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        props = connection.transport.connection.server_properties  # type: ignore[union-attr]
        raw = props.get("version", b"?")
        versions["RabbitMQ"] = raw.decode() if isinstance(raw, bytes) else str(raw)
    finally:
        await connection.close()
    redis = aioredis.Redis.from_url(redis_url)
    try:
        info = await redis.info("server")
        versions["Redis"] = str(info.get("redis_version", "?"))
    finally:
        await redis.aclose()
    return versions
