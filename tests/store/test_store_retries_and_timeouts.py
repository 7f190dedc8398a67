"""Retries, retry timers, timeouts named by kind and delayed starts in the StateStore."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis_cluster_support import RedisTarget
from store_support import (
    BOOM,
    DISPATCH_MS,
    LEASE_MS,
    TIMEOUT_MS,
    Saga,
    of,
    saga_steps,
    step,
)

from sasfleet.shared.state.records import (
    Announce,
    CreateResult,
    DispatchOrder,
    Finished,
)
from sasfleet.shared.state.store import (
    LEASE_LOST,
    RENEWED,
)

# --- retries and timers -----------------------------------------------------------------------


async def test_a_failure_with_a_delay_and_attempts_left_waits_for_its_timer(saga: Saga) -> None:
    created = await saga.create([step(0)])
    assert created.order is not None and created.order.lease == 1
    due = await saga.run(0, error=BOOM, retry_delay_ms=2_500)
    assert due == saga.clock.now_ms() + 2_500
    s = await saga.step(0)
    assert (s["status"], s["attempt"]) == ("waiting_retry", "1")
    assert (
        await saga.redis.zscore(saga.store.keys.timers(saga.store.keys.bucket_of("j1")), "j1|0")
        == due
    )
    assert (
        await saga.redis.zscore(saga.store.keys.deadlines(saga.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    saga.clock.advance(2_499)
    assert await saga.fire(0) is None  # not due: nothing happens
    assert (await saga.step(0))["status"] == "waiting_retry"
    saga.clock.advance(1)
    order = await saga.fire(0)
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.task) == (0, 2, "task0")
    assert order.lease > created.order.lease
    history = (await saga.view()).history
    retry = of(history, "retry")
    assert [(h.attempt, h.lease, h.previous, h.status) for h in retry] == [
        (2, order.lease, "waiting_retry", "dispatched")
    ]
    assert await saga.claim(0, created.order.lease) is False  # the old attempt is over
    assert await saga.claim(0, order.lease) is True


async def test_two_schedulers_fire_one_timer_once(saga: Saga, redis_target: RedisTarget) -> None:
    await saga.create([step(0)])
    await saga.run(0, error=BOOM, retry_delay_ms=1_000)
    saga.clock.advance(1_000)
    other_redis = redis_target.connect()
    try:
        other = saga.other_store(other_redis)
        fired = await asyncio.gather(saga.fire(0), saga.fire(0, store=other))
    finally:
        await other_redis.aclose()
    assert len([f for f in fired if isinstance(f, DispatchOrder)]) == 1
    assert fired.count(None) == 1
    assert len(of((await saga.view()).history, "retry")) == 1
    assert (await saga.step(0))["attempt"] == "2"


async def test_no_retry_when_the_agent_gives_no_delay_or_attempts_ran_out(saga: Saga) -> None:
    await saga.create([step(0)], job_id="no-delay")
    done = await saga.run(0, job_id="no-delay", error=BOOM, retry_delay_ms=None)
    assert isinstance(done, Finished) and done.status == "failed"
    await saga.create([step(0, max_attempts=1)], job_id="last")
    done = await saga.run(0, job_id="last", error=BOOM, retry_delay_ms=10)
    assert isinstance(done, Finished) and done.status == "failed"


async def test_a_retry_timer_due_at_or_after_schedule_to_close_fails_the_step(
    saga: Saga,
) -> None:
    await saga.create([step(0, schedule_to_close_ms=10_000)])
    close_by = saga.clock.now_ms() + 10_000
    saga.clock.advance(5_000)
    due = await saga.run(0, error=BOOM, retry_delay_ms=3_000)
    assert due == close_by - 2_000  # still in time when it was set
    saga.clock.advance(5_000)  # the scheduler is late: the step ran out of time
    announce = await saga.fire(0)
    assert announce == Announce(step=0, attempt=1, lease=1)
    s = await saga.step(0)
    assert s["status"] == "failed" and json.loads(s["error"])["type"] == "ScheduleToCloseTimeout"
    assert of((await saga.view()).history, "timeout_fail")[-1].previous == "waiting_retry"
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "failed"
    assert json.loads(done.error)["type"] == "ScheduleToCloseTimeout"


async def test_a_retry_that_would_start_after_schedule_to_close_is_not_made(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_ms=10_000)])
    saga.clock.advance(5_000)
    done = await saga.run(0, error=BOOM, retry_delay_ms=5_000)  # due exactly at close_by
    assert isinstance(done, Finished) and done.status == "failed"
    assert (
        await saga.redis.zscore(saga.store.keys.timers(saga.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    assert not of((await saga.view()).history, "retry_later")


async def test_a_retry_dropped_for_schedule_to_close_names_the_timeout(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_ms=10_000)])
    saga.clock.advance(5_000)
    done = await saga.run(0, error=BOOM, retry_delay_ms=6_000)
    assert isinstance(done, Finished) and done.status == "failed"
    history = (await saga.view()).history
    named = json.loads(done.error)["type"] == "ScheduleToCloseTimeout" or any(
        "schedule-to-close" in (h.detail or "") for h in history
    )
    assert named, [(h.event, h.detail) for h in history]


# --- timeouts named by kind -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claimed", "timeout_ms", "wait_ms", "kind", "reason"),
    [
        (False, TIMEOUT_MS, DISPATCH_MS, "ScheduleToStartTimeout", "not claimed in time"),
        (True, TIMEOUT_MS, LEASE_MS, "LeaseExpired", "lease expired (agent agent-a)"),
        (True, 1_500, 1_500, "StartToCloseTimeout", "start-to-close timeout"),
    ],
)
@pytest.mark.parametrize("attempts_left", [False, True])
async def test_recover_names_the_kind_of_timeout(
    saga: Saga,
    claimed: bool,
    timeout_ms: int,
    wait_ms: int,
    kind: str,
    reason: str,
    attempts_left: bool,
) -> None:
    max_attempts = 2 if attempts_left else 1
    await saga.create([step(0, timeout_ms=timeout_ms, max_attempts=max_attempts)])
    if claimed:
        assert await saga.claim(0, 1, max_attempts=max_attempts)
    saga.clock.advance(wait_ms - 1)
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    outcome = await saga.recover(0)
    history = (await saga.view()).history
    if attempts_left:
        assert isinstance(outcome, DispatchOrder) and outcome.attempt == 2
        assert history[-1].event == "redispatch" and history[-1].detail == reason
    else:
        assert outcome == Announce(step=0, attempt=1, lease=1)
        error = json.loads((await saga.step(0))["error"])
        assert (error["type"], error["retryable"]) == (kind, False)
        assert reason in error["message"]
        assert history[-1].event == "timeout_fail" and history[-1].detail == reason


async def test_renewals_never_outlive_the_start_to_close_timeout(saga: Saga) -> None:
    await saga.create([step(0, timeout_ms=5_000)])
    assert await saga.claim(0, 1)
    for _ in range(3):
        saga.clock.advance(1_500)
        assert await saga.store.renew("j1", 0, 1, LEASE_MS) == RENEWED
    assert await saga.store.renew("j1", 0, 7, LEASE_MS) == LEASE_LOST
    saga.clock.advance(499)  # 4,999 ms after the claim
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    assert isinstance(await saga.recover(0), DispatchOrder)
    assert of((await saga.view()).history, "redispatch")[0].detail == "start-to-close timeout"


async def test_schedule_to_close_ends_a_running_step_with_attempts_left(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_ms=3_000)])
    assert await saga.claim(0, 1)
    saga.clock.advance(1_500)
    assert await saga.store.renew("j1", 0, 1, LEASE_MS) == RENEWED
    saga.clock.advance(1_500)
    assert await saga.recover(0) == Announce(step=0, attempt=1, lease=1)
    error = json.loads((await saga.step(0))["error"])
    assert error["type"] == "ScheduleToCloseTimeout"


# --- delayed start ----------------------------------------------------------------------------


async def test_a_delayed_job_stays_pending_until_its_timer_starts_it(saga: Saga) -> None:
    start_at = saga.clock.now_ms() + 10_000
    created = await saga.create(saga_steps("", ""), start_at_ms=start_at)
    assert created == CreateResult(True, "pending", "pending", None, start_at)
    assert await saga.job_status() == "pending"
    assert (await saga.step(0))["status"] == "pending"
    assert (
        await saga.redis.zscore(saga.store.keys.timers(saga.store.keys.bucket_of("j1")), "j1|0")
        == start_at
    )
    assert (
        await saga.redis.zscore(saga.store.keys.deadlines(saga.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    again = await saga.create(saga_steps("", ""), start_at_ms=start_at)
    assert (again.created, again.job_status, again.step_status) == (False, "pending", "pending")
    saga.clock.advance(9_999)
    assert await saga.fire(0) is None
    assert await saga.recover(0) is None
    assert await saga.job_status() == "pending"
    saga.clock.advance(1)
    order = await saga.fire(0)
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.lease, order.task) == (0, 1, 1, "task0")
    assert await saga.job_status() == "running"
    assert await saga.redis.zscore(
        saga.store.keys.deadlines(saga.store.keys.bucket_of("j1")), "j1|0"
    ) == (saga.clock.now_ms() + DISPATCH_MS)
    assert [h.event for h in (await saga.view()).history] == [
        "submit",
        "delay",
        "start",
        "dispatch",
    ]
    assert await saga.fire(0) is None  # fired once


async def test_a_start_time_in_the_past_starts_at_once(saga: Saga) -> None:
    created = await saga.create([step(0)], start_at_ms=saga.clock.now_ms() - 1)
    assert created.created and created.job_status == "running" and created.order is not None
