"""The Redis client every service uses."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def connect_redis(url: str, max_connections: int = 64, name: str | None = None) -> aioredis.Redis:
    """A Redis client that retries briefly on connection errors (Redis restarts, failovers).

    The pool blocks callers when all connections are busy instead of failing, so a burst of
    concurrent calls queues up rather than raising "Too many connections". ``name`` is
    set on every connection (CLIENT SETNAME).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        client_name=name,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool
