"""Deletes one run's queues, exchanges and Redis keys: only the names it declared and the
keys under its own prefix (never FLUSHDB, never another run's names)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import aio_pika
import redis.asyncio as aioredis
from aio_pika.exceptions import AMQPError

from bench.model import RunSpec


def broker_names(spec: RunSpec) -> tuple[list[str], list[str]]:
    """The queues and exchanges a peer or raw run declares (SAS Fleet: purge_fleet)."""
    p = spec.prefix
    jobs = f"{p}.jobs"
    if spec.system.startswith("celery"):
        return [jobs], [jobs]
    if spec.system == "dramatiq":
        return [jobs, f"{jobs}.DQ", f"{jobs}.XQ"], []
    if spec.system == "taskiq":
        return [jobs, f"{p}.dead"], [p]
    if spec.system == "raw":
        return [jobs, f"{p}.replies"], []
    return [], []


async def delete_broker_names(
    amqp_url: str, queues: Iterable[str], exchanges: Iterable[str]
) -> None:
    """Delete the named queues and exchanges (each on a fresh channel: a failed delete
    closes its channel)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        for queue in queues:
            with contextlib.suppress(AMQPError):
                channel = await connection.channel()
                await channel.queue_delete(queue)
                await channel.close()
        for exchange in exchanges:
            with contextlib.suppress(AMQPError):
                channel = await connection.channel()
                await channel.exchange_delete(exchange)
                await channel.close()
    finally:
        await connection.close()


async def delete_keys(redis_url: str, key_prefix: str) -> int:
    """UNLINK every key that starts with ``key_prefix``; returns how many."""
    if not key_prefix.endswith(":"):
        raise ValueError("a key prefix must end with ':' so it cannot match another run's")
    redis = aioredis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{key_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await redis.unlink(*batch)
    finally:
        await redis.aclose()
    return deleted


async def clean_run(spec: RunSpec) -> None:
    """Everything one peer or raw run left in RabbitMQ and Redis."""
    queues, exchanges = broker_names(spec)
    await delete_broker_names(spec.amqp_url, queues, exchanges)
    await delete_keys(spec.redis_url, f"{spec.prefix}:")
