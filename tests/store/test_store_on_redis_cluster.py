"""The state scripts on a three-node Redis Cluster started from ``redis-server``: every
script runs (each touches one slot), jobs spread over all nodes, and agents' connections are
seen on every node. The store's whole script suite also runs on the cluster (the
``redis_target`` parameter of the other store tests); tests/system runs the services on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis_cluster_support import RedisClusterNodes, RedisTarget
from store_support import DEFAULTS, FIRST_BACKOFF_MS, FLEET, TIMINGS

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.submit import StepSpec
from sasfleet.shared.state.agents import AgentRegistry, agent_connection_prefix
from sasfleet.shared.state.connection import RedisClient, connect_redis
from sasfleet.shared.state.keys import BUCKETS, parse_deadline_member
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import Finished, Fired, Recorded, Recovered, RetryLater, Stale
from sasfleet.shared.state.store import NewJob, StateStore, step_record

JOBS = 4 * BUCKETS


@pytest.fixture
async def cluster_redis(redis_cluster: RedisClusterNodes) -> AsyncIterator[RedisClient]:
    redis = RedisTarget(redis_cluster.url, cluster=True).connect()
    try:
        yield redis
    finally:
        await redis.aclose()


def two_step_job(job_id: str) -> NewJob:
    spec = [StepSpec(task=f"task{i}", payload={}) for i in range(2)]
    return NewJob(job_id, [step_record(s, DEFAULTS, FLEET) for s in spec])


async def test_store_scripts_run_for_jobs_on_every_cluster_node(
    redis_cluster: RedisClusterNodes, cluster_redis: RedisClient
) -> None:
    prefix, clock = "cl-store", ManualClock()
    store = StateStore(cluster_redis, prefix, clock, TIMINGS)
    reader = JobReader(cluster_redis, prefix)
    ids = [f"job-{i}" for i in range(JOBS)]
    assert {store.keys.bucket_of(j) for j in ids} == set(store.keys.buckets)

    # Step 0 on agent-a, recorded and advanced: step 1 is dispatched.
    orders = {}
    for job_id in ids:
        created = await store.create_job(two_step_job(job_id), "scheduler-1")
        assert created.created and created.order is not None
        assert await store.claim(job_id, 0, created.order.lease, "agent-a", FLEET)
        recorded = await store.record(job_id, 0, created.order.lease, "agent-a", result=b"0")
        assert recorded == Recorded()
        nxt = await store.advance(job_id, 0, created.order.lease, "scheduler-1")
        assert isinstance(nxt, DispatchOrder) and nxt.step == 1
        assert await store.claim(job_id, 1, nxt.lease, "agent-b", FLEET)
        orders[job_id] = nxt
        clock.advance(1)

    # agent-b dies: its steps (in every bucket) are made due and recovered by one scan;
    # each lost attempt fails and waits for its backoff, then its timer dispatches the next.
    assert await store.expire_agent("agent-b") == JOBS
    due = await store.due(10 * JOBS)
    assert sorted(parse_deadline_member(m) for m in due) == sorted((j, 1) for j in ids)
    for job_id in ids:
        recovered = await store.recover(job_id, 1, "supervisor-1")
        assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
        assert isinstance(recovered.next, RetryLater)
    assert await store.due(10 * JOBS) == []
    clock.advance(FIRST_BACKOFF_MS)
    timers = await store.timers_due(10 * JOBS)
    assert sorted(parse_deadline_member(m) for m in timers) == sorted((j, 1) for j in ids)
    for job_id in ids:
        fired = await store.fire_timer(job_id, 1, "scheduler-1")
        assert isinstance(fired, Fired)
        again = fired.next
        assert isinstance(again, DispatchOrder) and again.attempt == 2
        late = await store.record(job_id, 1, orders[job_id].lease, "agent-b", result=b"late")
        assert late == Stale(status="dispatched", lease=again.lease)  # agent-b's is refused
        assert await store.claim(job_id, 1, again.lease, "agent-c", FLEET)
        recorded = await store.record(job_id, 1, again.lease, "agent-c", result=b"1")
        assert recorded == Recorded()
        done = await store.advance(job_id, 1, again.lease, "scheduler-1")
        assert isinstance(done, Finished) and (done.status, done.result) == ("succeeded", "1")

    assert await store.due(10 * JOBS) == []
    assert await store.timers_due(10 * JOBS) == []
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
