"""The services on a three-node Redis Cluster started from ``redis-server``: a killed
agent's steps are recovered as on one Redis (tests/store runs every script on the cluster)."""

from __future__ import annotations

import pytest
from history_support import events, timed_out_and_retried
from redis_cluster_support import RedisClusterNodes


@pytest.fixture
def fleet_env(fleet_env: dict[str, str], redis_cluster: RedisClusterNodes) -> dict[str, str]:
    """The services of these tests keep their state in the cluster."""
    return {**fleet_env, "SASFLEET_REDIS_URL": redis_cluster.url, "SASFLEET_REDIS_CLUSTER": "true"}


async def test_fleet_on_a_redis_cluster_recovers_a_killed_agents_steps(
    fleet, services, client, jobs
) -> None:
    ids = [await client.submit("sleep", {"seconds": 1.5}) for _ in range(16)]
    await jobs.until(
        ids[0], lambda v: v.steps[0].status == "running", timeout=20, what="step 0 running"
    )
    killed = services.agent
    killed.kill()
    fleet.agent("sasfleet.examples.tasks", concurrency=16)

    for job_id in ids:
        outcome = await client.wait(job_id, timeout=60)
        assert outcome.status == "succeeded", (job_id, outcome)
    views = [await client.get(j) for j in ids]
    recovered = [v for v in views if v is not None and events(v.history, "timeout_fail")]
    # The killed agent held up to 8 steps; each failed at its lease's deadline (the
    # supervisor's timeout_fail, naming the dead agent) and ran again as attempt 2.
    assert recovered
    for view in recovered:
        timeout, _, _ = timed_out_and_retried(view.history, 0, 1)
        assert f"-{killed.pid}-" in (timeout.detail or "")
        assert (timeout.detail or "").startswith("LeaseExpired: "), timeout
        assert view.status == "succeeded" and view.steps[0].attempt == 2
