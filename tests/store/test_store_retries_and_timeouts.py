"""Retries, retry timers, timeouts named by kind (and backing off like any failure) and
delayed starts in the StateStore."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis_cluster_support import RedisTarget
from store_support import (
    BOOM,
    DECLINED,
    DISPATCH_MS,
    FIRST_BACKOFF_MS,
    LEASE_MS,
    TIMEOUT_S,
    Saga,
    of,
    repeated,
    saga_steps,
    step,
)

from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.state.records import Finished, Fired, Recovered, RetryLater
from sasfleet.shared.state.store import CreateResult

# --- retries and timers -----------------------------------------------------------------------


async def test_a_failure_with_attempts_left_waits_for_its_retry_timer(saga: Saga) -> None:
    created = await saga.create([step(0)])
    assert created.order is not None and created.order.lease == 1
    # The handler asked for its own wait: it replaces the policy's backoff.
    later = await saga.run(0, error=BOOM, retry_after_ms=2_500)
    due = saga.clock.now_ms() + 2_500
    assert later == RetryLater(due=due)
    s = await saga.step(0)
    assert (s["status"], s["attempt"]) == ("waiting_retry", "1")
    assert await saga.timer(0) == due
    assert await saga.deadline(0) is None
    saga.clock.advance(2_499)
    assert await saga.fire(0) is None  # not due: nothing happens
    assert (await saga.step(0))["status"] == "waiting_retry"
    saga.clock.advance(1)
    fired = await saga.fire(0)
    assert isinstance(fired, Fired) and fired.failure is None
    order = fired.next
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.task) == (0, 2, "task0")
    assert order.lease > created.order.lease
    history = (await saga.view()).history
    retry = of(history, "retry")
    assert [(h.attempt, h.lease, h.previous, h.status) for h in retry] == [
        (2, order.lease, "waiting_retry", "dispatched")
    ]
    assert of(history, "retry_later")[-1].detail == "retry in 2500 ms"
    assert await saga.claim(0, created.order.lease) is False  # the old attempt is over
    assert await saga.claim(0, order.lease) is True


async def test_two_schedulers_fire_one_timer_once(saga: Saga, redis_target: RedisTarget) -> None:
    await saga.create([step(0)])
    await saga.run(0, error=BOOM, retry_after_ms=1_000)
    saga.clock.advance(1_000)
    other_redis = redis_target.connect()
    try:
        other = saga.other_store(other_redis)
        fired = await asyncio.gather(saga.fire(0), saga.fire(0, store=other))
    finally:
        await other_redis.aclose()
    assert len([f for f in fired if isinstance(f, Fired)]) == 1
    assert fired.count(None) == 1
    assert len(of((await saga.view()).history, "retry")) == 1
    assert (await saga.step(0))["attempt"] == "2"


async def test_no_retry_for_a_non_retryable_error_or_when_attempts_ran_out(saga: Saga) -> None:
    await saga.create([step(0)], job_id="declined")
    done = await saga.run(0, job_id="declined", error=DECLINED)  # attempts are left
    assert isinstance(done, Finished) and done.status == "failed"
    await saga.create([step(0, max_attempts=1)], job_id="last")
    done = await saga.run(0, job_id="last", error=BOOM, retry_after_ms=10)
    assert isinstance(done, Finished) and done.status == "failed"
    for job_id in ("declined", "last"):
        assert await saga.timer(0, job_id) is None
        assert not of((await saga.view(job_id)).history, "retry_later")


async def test_a_retry_timer_due_at_or_after_schedule_to_close_fails_the_step(
    saga: Saga,
) -> None:
    await saga.create([step(0, schedule_to_close_s=10)])
    close_by = saga.clock.now_ms() + 10_000
    saga.clock.advance(5_000)
    later = await saga.run(0, error=BOOM, retry_after_ms=3_000)
    assert later == RetryLater(due=close_by - 2_000)  # still in time when it was set
    saga.clock.advance(5_000)  # the scheduler is late: the step ran out of time
    fired = await saga.fire(0)
    # The timer fails the step and follows the failure at once: no announcement.
    assert isinstance(fired, Fired) and fired.failure == "ScheduleToCloseTimeout"
    done = fired.next
    assert isinstance(done, Finished) and (done.status, done.ended) == ("failed", True)
    assert json.loads(done.error)["type"] == "ScheduleToCloseTimeout"
    s = await saga.step(0)
    assert s["status"] == "failed" and json.loads(s["error"])["type"] == "ScheduleToCloseTimeout"
    assert of((await saga.view()).history, "timeout_fail")[-1].previous == "waiting_retry"
    assert await saga.advance(0, 1) == repeated(done)


async def test_a_retry_that_would_start_after_schedule_to_close_is_not_made(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_s=10)])
    saga.clock.advance(5_000)
    done = await saga.run(0, error=BOOM, retry_after_ms=5_000)  # due exactly at close_by
    assert isinstance(done, Finished) and done.status == "failed"
    assert await saga.timer(0) is None
    assert not of((await saga.view()).history, "retry_later")


async def test_a_retry_dropped_for_schedule_to_close_names_the_timeout(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_s=10)])
    saga.clock.advance(5_000)
    done = await saga.run(0, error=BOOM, retry_after_ms=6_000)
    assert isinstance(done, Finished) and done.status == "failed"
    error = json.loads(done.error)
    assert error == {
        "type": "ScheduleToCloseTimeout",
        "message": "no time left for attempt 2 (last error: RuntimeError: boom)",
        "retryable": False,
    }
    assert json.loads((await saga.step(0))["error"]) == error
    detail = of((await saga.view()).history, "timeout_fail")[-1].detail
    assert detail == f"ScheduleToCloseTimeout: {error['message']}"


# --- timeouts named by kind, backing off like any failure ------------------------------------


@pytest.mark.parametrize(
    ("claimed", "timeout_s", "wait_ms", "kind", "reason"),
    [
        (False, TIMEOUT_S, DISPATCH_MS, "ScheduleToStartTimeout", "not claimed in time"),
        (True, TIMEOUT_S, LEASE_MS, "LeaseExpired", "lease expired (agent agent-a)"),
        (True, 1.5, 1_500, "StartToCloseTimeout", "start-to-close timeout"),
    ],
)
@pytest.mark.parametrize("attempts_left", [False, True])
async def test_recover_fails_the_step_naming_the_kind_of_timeout(
    saga: Saga,
    claimed: bool,
    timeout_s: float,
    wait_ms: int,
    kind: str,
    reason: str,
    attempts_left: bool,
) -> None:
    await saga.create([step(0, timeout_s=timeout_s, max_attempts=2 if attempts_left else 1)])
    if claimed:
        assert await saga.claim(0, 1)
    saga.clock.advance(wait_ms - 1)
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered)
    assert (recovered.failure, recovered.repair) == (kind, False)
    s = await saga.step(0)
    error = json.loads(s["error"])
    # These timeouts may be retried (while the policy allows): the error says so.
    assert error == {"type": kind, "message": f"attempt 1: {reason}", "retryable": True}
    history = (await saga.view()).history
    timeout_fail = of(history, "timeout_fail")
    assert [(h.attempt, h.lease, h.status, h.detail) for h in timeout_fail] == [
        (1, 1, "failed", f"{kind}: attempt 1: {reason}")
    ]
    if attempts_left:
        # The failure is followed like any other: attempt 2 after the backoff.
        due = saga.clock.now_ms() + FIRST_BACKOFF_MS
        assert recovered.next == RetryLater(due=due)
        assert (s["status"], await saga.timer(0), await saga.deadline(0)) == (
            "waiting_retry",
            due,
            None,
        )
        assert history[-1].event == "retry_later"
    else:
        done = recovered.next
        assert isinstance(done, Finished) and done.status == "failed"
        assert json.loads(done.error) == error
        assert (s["status"], await saga.timer(0), await saga.deadline(0)) == ("failed", None, None)
        assert (history[-1].event, history[-1].step) == ("failed", None)


async def test_a_timed_out_attempt_is_retried_when_its_backoff_timer_fires(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    saga.clock.advance(LEASE_MS)  # the agent died
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
    assert recovered.next == RetryLater(due=saga.clock.now_ms() + FIRST_BACKOFF_MS)
    assert await saga.recover(0) is None  # recovered once: nothing is due
    saga.clock.advance(FIRST_BACKOFF_MS - 1)
    assert await saga.fire(0) is None
    saga.clock.advance(1)
    fired = await saga.fire(0)
    assert isinstance(fired, Fired)
    order = fired.next
    assert isinstance(order, DispatchOrder) and (order.attempt, order.lease) == (2, 2)
    retry = of((await saga.view()).history, "retry")[-1]
    assert (retry.previous, retry.status, retry.detail) == (
        "waiting_retry",
        "dispatched",
        "retry timer due",
    )
    assert await saga.claim(0, 1, agent="agent-dead") is False
    assert await saga.claim(0, 2, agent="agent-b")


async def test_renewals_never_outlive_the_start_to_close_timeout(saga: Saga) -> None:
    await saga.create([step(0, timeout_s=5)])
    assert await saga.claim(0, 1)
    for _ in range(3):
        saga.clock.advance(1_500)
        assert await saga.store.renew("j1", 0, 1) == "renewed"
    assert await saga.store.renew("j1", 0, 7) == "lost"
    saga.clock.advance(499)  # 4,999 ms after the claim
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "StartToCloseTimeout"
    assert isinstance(recovered.next, RetryLater)
    assert of((await saga.view()).history, "timeout_fail")[0].detail == (
        "StartToCloseTimeout: attempt 1: start-to-close timeout"
    )


async def test_a_renewal_stores_the_handlers_progress(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.store.renew("j1", 0, 1, b'{"done":3}') == "renewed"
    assert (await saga.view()).steps[0].progress == {"done": 3}
    assert await saga.deadline(0) == saga.clock.now_ms() + LEASE_MS


async def test_schedule_to_close_ends_a_running_step_with_attempts_left(saga: Saga) -> None:
    await saga.create([step(0, schedule_to_close_s=3)])
    assert await saga.claim(0, 1)
    saga.clock.advance(1_500)
    assert await saga.store.renew("j1", 0, 1) == "renewed"
    saga.clock.advance(1_500)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "ScheduleToCloseTimeout"
    done = recovered.next
    assert isinstance(done, Finished) and done.status == "failed"
    error = json.loads((await saga.step(0))["error"])
    assert (error["type"], error["retryable"]) == ("ScheduleToCloseTimeout", False)


async def test_an_agent_found_dead_has_its_steps_recovered_at_once(saga: Saga) -> None:
    await saga.create([step(0)])
    await saga.create([step(0)], job_id="j2")
    assert await saga.claim(0, 1)
    assert await saga.claim(0, 1, job_id="j2", agent="agent-b")
    assert await saga.store.expire_agent("agent-a") == 1
    assert await saga.store.expire_agent("agent-a") == 0  # its steps are forgotten
    assert await saga.store.due(10) == ["j1|0"]  # only agent-a's step, due now
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
    assert (await saga.step(0, "j2"))["status"] == "running"


# --- delayed start ----------------------------------------------------------------------------


async def test_a_delayed_job_stays_pending_until_its_timer_starts_it(saga: Saga) -> None:
    start_at = saga.clock.now_ms() + 10_000
    created = await saga.create(saga_steps("", ""), start_at_ms=start_at)
    assert created == CreateResult(True, "pending", "pending", None, start_at)
    assert await saga.job_status() == "pending"
    assert (await saga.step(0))["status"] == "pending"
    assert await saga.timer(0) == start_at
    assert await saga.deadline(0) is None
    again_ = await saga.create(saga_steps("", ""), start_at_ms=start_at)
    assert (again_.created, again_.job_status, again_.step_status) == (False, "pending", "pending")
    assert again_.order is None
    saga.clock.advance(9_999)
    assert await saga.fire(0) is None
    assert await saga.recover(0) is None
    assert await saga.job_status() == "pending"
    saga.clock.advance(1)
    fired = await saga.fire(0)
    assert isinstance(fired, Fired) and fired.failure is None
    order = fired.next
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.lease, order.task) == (0, 1, 1, "task0")
    assert await saga.job_status() == "running"
    assert await saga.deadline(0) == saga.clock.now_ms() + DISPATCH_MS
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
