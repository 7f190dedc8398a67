"""The Redis client every service uses: one server (or a Sentinel-fronted primary's URL),
or a Redis Cluster."""

from __future__ import annotations

from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sasfleet.shared.config import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster


def connect_redis(
    url: str, max_connections: int = 64, name: str | None = None, *, cluster: bool = False
) -> RedisClient:
    """A Redis client that retries briefly on connection errors (Redis restarts, failovers).

    The pool blocks callers when all connections are busy instead of failing, so a burst of
    concurrent calls queues up rather than raising "Too many connections". ``name`` is
    set on every connection (CLIENT SETNAME). ``cluster``: ``url`` names one node of a
    Redis Cluster, and the client discovers the rest.
    """
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8)
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            decode_responses=True,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
            client_name=name,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        client_name=name,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def redis_for(
    settings: Settings, max_connections: int = 64, name: str | None = None
) -> RedisClient:
    """The Redis client ``settings`` describe (URL and cluster mode)."""
    return connect_redis(
        settings.redis_url.get_secret_value(),
        max_connections,
        name,
        cluster=settings.redis_cluster,
    )
