"""Fixtures of the store tier: the saga harness on one Redis and on a Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis_cluster_support import RedisTarget
from saga_support import Saga

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.store import StateStore


@pytest.fixture
async def saga(redis_target: RedisTarget) -> AsyncIterator[Saga]:
    redis = redis_target.connect()
    await redis.ping()  # fail, never skip, when Redis is missing
    prefix, clock = f"t-{uuid4().hex[:8]}", ManualClock()
    try:
        yield Saga(redis, prefix, clock, StateStore(redis, prefix, clock), JobReader(redis, prefix))
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
