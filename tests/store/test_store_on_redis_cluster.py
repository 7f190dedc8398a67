"""The state scripts on a three-node Redis Cluster started from ``redis-server``: every
script runs (each touches one slot), jobs spread over all nodes, and agents' connections are
seen on every node. The store's whole script suite also runs on the cluster (the
``redis_target`` parameter of the other store tests); tests/system runs the services on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis_cluster_support import RedisClusterNodes, RedisTarget

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.state.agents import AgentRegistry, agent_connection_prefix
from sasfleet.shared.state.connection import RedisClient, connect_redis
from sasfleet.shared.state.keys import BUCKETS, parse_deadline_member
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import DispatchOrder, Finished, NewJob, NewStep
from sasfleet.shared.state.store import StateStore

JOBS = 4 * BUCKETS
LEASE_MS, ANNOUNCE_MS = 2_000, 30_000


@pytest.fixture
async def cluster_redis(redis_cluster: RedisClusterNodes) -> AsyncIterator[RedisClient]:
    redis = RedisTarget(redis_cluster.url, cluster=True).connect()
    try:
        yield redis
    finally:
        await redis.aclose()


def two_step_job(job_id: str) -> NewJob:
    steps = [NewStep(f"task{i}", "default", b"{}", 3, 60_000, schedule_to_start_ms=5_000)
             for i in range(2)]  # fmt: skip
    return NewJob(job_id, steps)


async def test_store_scripts_run_for_jobs_on_every_cluster_node(
    redis_cluster: RedisClusterNodes, cluster_redis: RedisClient
) -> None:
    prefix, clock = "cl-store", ManualClock()
    store, reader = StateStore(cluster_redis, prefix, clock), JobReader(cluster_redis, prefix)
    ids = [f"job-{i}" for i in range(JOBS)]
    assert {store.keys.bucket_of(j) for j in ids} == set(store.keys.buckets)

    # Step 0 on agent-a, recorded and advanced: step 1 is dispatched.
    orders = {}
    for job_id in ids:
        created = await store.create_job(two_step_job(job_id), "scheduler-1")
        assert created.created and created.order is not None
        assert await store.claim(job_id, 0, created.order.lease, "agent-a", LEASE_MS, 3)
        assert await store.record(
            job_id, 0, created.order.lease, "agent-a", result=b"0",
            retry_delay_ms=None, announce_after_ms=ANNOUNCE_MS,
        )  # fmt: skip
        nxt = await store.advance(job_id, 0, created.order.lease, "scheduler-1", ttl_s=600)
        assert isinstance(nxt, DispatchOrder) and nxt.step == 1
        assert await store.claim(job_id, 1, nxt.lease, "agent-b", LEASE_MS, 3)
        orders[job_id] = nxt
        clock.advance(1)

    # agent-b dies: its steps (in every bucket) are made due and recovered by one scan.
    assert await store.expire_agent("agent-b") == JOBS
    due = await store.due(10 * JOBS)
    assert sorted(parse_deadline_member(m) for m in due) == sorted((j, 1) for j in ids)
    for job_id in ids:
        again = await store.recover(job_id, 1, "supervisor-1", announce_after_ms=ANNOUNCE_MS)
        assert isinstance(again, DispatchOrder) and again.attempt == 2
        assert not await store.record(  # agent-b's late result is refused
            job_id, 1, orders[job_id].lease, "agent-b", result=b"late",
            retry_delay_ms=None, announce_after_ms=ANNOUNCE_MS,
        )  # fmt: skip
        assert await store.claim(job_id, 1, again.lease, "agent-c", LEASE_MS, 3)
        assert await store.record(
            job_id, 1, again.lease, "agent-c", result=b"1",
            retry_delay_ms=None, announce_after_ms=ANNOUNCE_MS,
        )  # fmt: skip
        done = await store.advance(job_id, 1, again.lease, "scheduler-1", ttl_s=600)
        assert isinstance(done, Finished) and (done.status, done.result) == ("succeeded", "1")

    assert await store.due(10 * JOBS) == []
    # The jobs index of every bucket merges back into creation order.
    assert await reader.job_ids(JOBS, newest_first=False) == ids
    view = await reader.job(ids[-1])
    assert view is not None and [h.event for h in view.history].count("stale_result_rejected") == 1
    # Each node of the cluster holds some of the jobs.
    for i in range(len(redis_cluster.ports)):
        node = redis_cluster.node(i)
        assert any(True for _ in node.scan_iter(match=f"{prefix}:*:job:*", count=1000)), i
    async for key in cluster_redis.scan_iter(match=f"{prefix}:*"):
        await cluster_redis.delete(key)


async def test_agent_connections_are_seen_on_every_cluster_node(
    redis_cluster: RedisClusterNodes, cluster_redis: RedisClient
) -> None:
    prefix = "cl-agents"
    name = f"{agent_connection_prefix(prefix)}agent-x"
    agent_redis = connect_redis(redis_cluster.url, name=name, cluster=True)
    try:
        # The agent talks to the node that holds one bucket only.
        await agent_redis.set(f"{prefix}:{{b3}}:probe", 1)
        registry = AgentRegistry(cluster_redis, prefix)
        assert "agent-x" in await registry.connected()
    finally:
        await agent_redis.delete(f"{prefix}:{{b3}}:probe")
        await agent_redis.aclose()
    assert "agent-x" not in await registry.connected()
