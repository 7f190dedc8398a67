"""Script calls made together go to Redis in one pipeline, and each still gets its own
reply or error: on one server and on a Redis Cluster (calls for several nodes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import msgspec
import pytest
from redis.exceptions import ResponseError
from redis_cluster_support import RedisClusterNodes, RedisTarget
from store_support import DEFAULTS, FLEET, TIMINGS

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.submit import StepSpec
from sasfleet.shared.state.connection import RedisClient
from sasfleet.shared.state.store import NewJob, StateStore, step_record


class Nothing(msgspec.Struct):
    """An empty input record."""


def job(job_id: str) -> NewJob:
    return NewJob(job_id, [step_record(StepSpec(task="echo", payload={}), DEFAULTS, FLEET)])


async def _store_on(target: RedisTarget) -> AsyncIterator[StateStore]:
    """A store under a prefix of its own, whose keys are deleted afterwards."""
    redis: RedisClient = target.connect()
    prefix = f"t-{uuid4().hex[:8]}"
    try:
        yield StateStore(redis, prefix, ManualClock(), TIMINGS)
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


@pytest.fixture
async def store(redis_target: RedisTarget) -> AsyncIterator[StateStore]:
    async for store in _store_on(redis_target):
        yield store


async def test_calls_made_together_each_get_their_own_reply(store: StateStore) -> None:
    ids = [f"job-{i}" for i in range(64)]
    created = await asyncio.gather(*(store.create_job(job(j), "scheduler-1") for j in ids))
    assert [c.order.job_id for c in created if c.order] == ids
    # Every other claim holds a wrong lease: exactly those are refused.
    claims = await asyncio.gather(
        *(store.claim(j, 0, 1 + i % 2, "agent-a", FLEET) for i, j in enumerate(ids))
    )
    assert claims == [i % 2 == 0 for i in range(len(ids))]


async def test_an_error_fails_only_its_own_call(store: StateStore) -> None:
    good = store.create_job(job("good"), "scheduler-1")
    bad = store.run("claim", [store.keys.step("bad", 0)], Nothing())  # too few keys and fields
    replies = await asyncio.gather(good, bad, return_exceptions=True)
    assert replies[0].created is True  # type: ignore[union-attr]
    assert isinstance(replies[1], ResponseError)


@pytest.fixture
async def cluster_store(redis_cluster: RedisClusterNodes) -> AsyncIterator[StateStore]:
    async for store in _store_on(RedisTarget(redis_cluster.url, cluster=True)):
        yield store


async def test_scripts_are_loaded_again_after_the_script_cache_is_flushed(
    redis_cluster: RedisClusterNodes, cluster_store: StateStore
) -> None:
    """What a Redis restart without persistence does to the script cache (on the private
    cluster: the machine's shared Redis is left alone)."""
    await cluster_store.create_job(job("before"), "scheduler-1")
    for i in range(len(redis_cluster.ports)):
        redis_cluster.node(i).script_flush()
    ids = [f"after-{i}" for i in range(32)]  # spread over every node
    created = await asyncio.gather(*(cluster_store.create_job(job(j), "s-1") for j in ids))
    assert all(c.created for c in created)
    assert await cluster_store.create_job(job("lone"), "scheduler-1")  # a call on its own
