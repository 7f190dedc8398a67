"""Fixtures of the store tier."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis_cluster_support import RedisTarget
from store_support import Saga, scripts_on


@pytest.fixture
async def saga(redis_target: RedisTarget) -> AsyncIterator[Saga]:
    """The saga harness, once on one Redis and once on a Redis Cluster."""
    async with scripts_on(redis_target, Saga) as harness:
        yield harness
