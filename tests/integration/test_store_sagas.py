"""Sagas, retries, timeouts, delayed starts and cancellation in the StateStore, against real
Redis with time under the test's control (ManualClock): no services, no sleeps."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast
from uuid import uuid4

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis_cluster_support import RedisTarget

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import (
    Announce,
    CreateResult,
    DispatchOrder,
    Finished,
    NewJob,
    NewStep,
)
from sasfleet.shared.state.store import (
    CANCEL_REQUESTED,
    LEASE_LOST,
    RENEWED,
    StateStore,
)
from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.shared.statemachine import JOB_TERMINAL, JobStatus

pytestmark = pytest.mark.integration

DISPATCH_MS, LEASE_MS, TIMEOUT_MS, ANNOUNCE_MS, TTL_S = 5_000, 2_000, 60_000, 30_000, 600
BOOM = ErrorInfo(type="RuntimeError", message="boom", retryable=True)
DECLINED = ErrorInfo(type="PaymentDeclined", message="card declined", retryable=False)
STUCK = ErrorInfo(type="RefundRejected", message="the bank said no", retryable=False)
# Events that hand out a new lease (a fencing token): it must only grow within a job.
LEASING_EVENTS = ("dispatch", "redispatch", "retry", "compensate")


def step(i: int, compensation: str = "", **options: Any) -> NewStep:
    """Forward step ``i``: task ``task<i>``, payload ``{"i": i}``."""
    return NewStep(
        f"task{i}",
        "default",
        f'{{"i":{i}}}'.encode(),
        options.pop("max_attempts", 3),
        options.pop("timeout_ms", TIMEOUT_MS),
        schedule_to_start_ms=options.pop("schedule_to_start_ms", DISPATCH_MS),
        compensation=compensation,
        **options,
    )


def saga_steps(*compensations: str) -> list[NewStep]:
    return [step(i, c) for i, c in enumerate(compensations)]


def of(history: list[HistoryEntry], event: str) -> list[HistoryEntry]:
    return [h for h in history if h.event == event]


@dataclass
class Saga:
    """One test's store under its own prefix, plus short-hands for the agent's and the
    services' calls (agent ``agent-a``, scheduler ``scheduler-1``, supervisor
    ``supervisor-1``)."""

    redis: aioredis.Redis
    prefix: str
    clock: ManualClock
    store: StateStore
    reader: JobReader

    def other_store(self, redis: aioredis.Redis) -> StateStore:
        """A second service instance: its own connection, the same prefix and clock."""
        return StateStore(redis, self.prefix, self.clock)

    async def create(self, steps: list[NewStep], job_id: str = "j1", **job: Any) -> CreateResult:
        return await self.store.create_job(NewJob(job_id, steps, **job), "scheduler-1")

    async def step(self, index: int, job_id: str = "j1") -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.store.keys.step(job_id, index)))

    async def lease(self, index: int, job_id: str = "j1") -> int:
        return int(await self.redis.hget(self.store.keys.step(job_id, index), "lease") or 0)

    async def job_status(self, job_id: str = "j1") -> str | None:
        return cast(str | None, await self.redis.hget(self.store.keys.job(job_id), "status"))

    async def view(self, job_id: str = "j1") -> JobView:
        view = await self.reader.job(job_id)
        assert view is not None, f"no job {job_id}"
        return view

    async def claim(
        self, index: int, lease: int, *, job_id: str = "j1", max_attempts: int | None = None
    ) -> bool:
        """The agent claims; it resolves max attempts to the step's own unless told."""
        if max_attempts is None:
            recorded = await self.redis.hget(self.store.keys.step(job_id, index), "max_attempts")
            max_attempts = int(recorded or 1)
        return await self.store.claim(job_id, index, lease, "agent-a", LEASE_MS, max_attempts)

    async def record(
        self,
        index: int,
        lease: int,
        *,
        job_id: str = "j1",
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        retry_delay_ms: int | None = None,
    ) -> bool:
        return await self.store.record(
            job_id,
            index,
            lease,
            "agent-a",
            result=result,
            error=error,
            retry_delay_ms=retry_delay_ms,
            announce_after_ms=ANNOUNCE_MS,
        )

    async def advance(self, index: int, lease: int, job_id: str = "j1") -> Any:
        return await self.store.advance(job_id, index, lease, "scheduler-1", ttl_s=TTL_S)

    async def recover(self, index: int, job_id: str = "j1") -> Any:
        return await self.store.recover(
            job_id, index, "supervisor-1", announce_after_ms=ANNOUNCE_MS
        )

    async def fire(self, index: int, job_id: str = "j1", store: StateStore | None = None) -> Any:
        return await (store or self.store).fire_timer(
            job_id, index, "scheduler-1", announce_after_ms=ANNOUNCE_MS
        )

    async def cancel(self, job_id: str = "j1") -> Announce | str:
        return await self.store.cancel(
            job_id, "client-1", announce_after_ms=ANNOUNCE_MS, ttl_s=TTL_S
        )

    async def run(
        self,
        index: int,
        *,
        job_id: str = "j1",
        result: bytes = b"null",
        error: ErrorInfo | None = None,
        retry_delay_ms: int | None = None,
    ) -> Any:
        """One attempt of the current dispatch of ``index``: claim, record, advance."""
        lease = await self.lease(index, job_id)
        assert await self.claim(index, lease, job_id=job_id), f"claim of step {index}"
        assert await self.record(
            index,
            lease,
            job_id=job_id,
            result=None if error else result,
            error=error,
            retry_delay_ms=retry_delay_ms,
        )
        return await self.advance(index, lease, job_id)


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


# --- compensation -----------------------------------------------------------------------------


async def test_a_final_failure_compensates_the_succeeded_steps_in_reverse_order(
    saga: Saga,
) -> None:
    await saga.create(saga_steps("undo0", "undo1", "undo2"))
    assert isinstance(await saga.run(0, result=b'"r0"'), DispatchOrder)
    assert isinstance(await saga.run(1, result=b'"r1"'), DispatchOrder)
    first = await saga.run(2, error=DECLINED)  # non-retryable: the agent gives no delay
    # The compensation of forward step i is step 3 + i; step 2 failed, so it is not undone.
    assert isinstance(first, DispatchOrder)
    assert (first.step, first.compensates, first.task, first.attempt) == (4, 1, "undo1", 1)
    assert (first.pool, first.payload) == ("default", '{"i":1}')  # the forward step's
    assert await saga.job_status() == "compensating"
    second = await saga.run(4, result=b'"undone 1"')
    assert isinstance(second, DispatchOrder)
    assert (second.step, second.compensates, second.task) == (3, 0, "undo0")
    assert second.lease > first.lease
    done = await saga.run(3, result=b'"undone 0"')
    assert isinstance(done, Finished) and done.status == "compensated"
    assert json.loads(done.error) == {
        "type": "PaymentDeclined",
        "message": "card declined",
        "retryable": False,
    }
    view = await saga.view()
    assert view.status == "compensated" and view.error["type"] == "PaymentDeclined"
    by_index = {s.index: s for s in view.steps}
    assert sorted(by_index) == [0, 1, 2, 3, 4]  # no compensation of step 2 (index 5)
    assert (by_index[3].compensates, by_index[4].compensates) == (0, 1)
    assert [(h.step, h.status) for h in of(view.history, "compensate")] == [
        (4, "dispatched"),
        (3, "dispatched"),
    ]
    assert [h.previous for h in of(view.history, "compensating")] == ["running"]
    assert (view.history[-1].step, view.history[-1].status) == (None, "compensated")
    assert await saga.advance(3, second.lease) == done  # a duplicate changes nothing
    assert await saga.advance(2, await saga.lease(2)) == done


async def test_only_steps_that_name_a_compensation_are_undone(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "", ""))
    await saga.run(0)
    await saga.run(1)
    order = await saga.run(2, error=DECLINED)
    assert isinstance(order, DispatchOrder) and (order.step, order.compensates) == (3, 0)
    done = await saga.run(3)
    assert isinstance(done, Finished) and done.status == "compensated"
    assert [h.step for h in of((await saga.view()).history, "compensate")] == [3]


async def test_a_failure_with_nothing_to_compensate_fails_the_job(saga: Saga) -> None:
    await saga.create(saga_steps("", "", "undo2"))
    await saga.run(0)
    done = await saga.run(1, error=DECLINED)
    assert isinstance(done, Finished) and done.status == "failed"
    assert json.loads(done.error)["type"] == "PaymentDeclined"
    assert not of((await saga.view()).history, "compensate")


async def test_a_compensation_retries_like_any_step(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder) and comp.step == 2
    due = await saga.run(2, error=BOOM, retry_delay_ms=700)
    assert due == saga.clock.now_ms() + 700
    assert (await saga.step(2))["status"] == "waiting_retry"
    saga.clock.advance(700)
    again = await saga.fire(2)
    assert isinstance(again, DispatchOrder)
    assert (again.step, again.attempt, again.compensates) == (2, 2, 0)
    assert again.lease > comp.lease
    done = await saga.run(2)
    assert isinstance(done, Finished) and done.status == "compensated"


async def test_a_compensation_that_cannot_finish_escalates_the_job_once(
    saga: Saga, redis_target: RedisTarget
) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    await saga.run(1, error=DECLINED)
    # Attempts are left, but the agent gives no delay: no further attempt.
    done = await saga.run(2, error=STUCK)
    assert isinstance(done, Finished) and done.status == "escalated"
    assert json.loads(done.error)["type"] == "RefundRejected"  # what could not be undone
    view = await saga.view()
    assert view.status == "escalated" and view.history[-1].status == "escalated"
    escalations = saga.store.keys.escalations(saga.store.keys.bucket_of("j1"))
    assert await saga.redis.zscore(escalations, "j1") is not None

    other_redis = redis_target.connect()
    try:
        other = saga.other_store(other_redis)
        claims = await asyncio.gather(
            saga.store.claim_escalations(10, 60_000), other.claim_escalations(10, 60_000)
        )
    finally:
        await other_redis.aclose()
    assert sorted(claims, key=len) == [[], ["j1"]]  # one supervisor reports it
    assert await saga.store.claim_escalations(10, 60_000) == []
    saga.clock.advance(60_000)  # the reporter died before it was done: offered again
    assert await saga.store.claim_escalations(10, 60_000) == ["j1"]
    await saga.store.escalation_reported("j1")
    assert await saga.redis.zscore(escalations, "j1") is None
    saga.clock.advance(60_000)
    assert await saga.store.claim_escalations(10, 60_000) == []


async def test_a_compensation_out_of_attempts_escalates(saga: Saga) -> None:
    await saga.create([step(0, "undo0", max_attempts=1), step(1)])
    await saga.run(0)
    await saga.run(1, error=DECLINED)
    # The compensation inherits one attempt: a retry delay changes nothing.
    done = await saga.run(2, error=BOOM, retry_delay_ms=100)
    assert isinstance(done, Finished) and done.status == "escalated"


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


# --- cancellation -----------------------------------------------------------------------------


async def test_cancelling_a_dispatched_step_stops_it_before_it_runs(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "undo1"))
    announce = await saga.cancel()
    assert announce == Announce(step=0, attempt=1, lease=1)
    s = await saga.step(0)
    assert s["status"] == "failed" and json.loads(s["error"])["type"] == "Cancelled"
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"
    assert await saga.claim(0, 1) is False  # the dispatch already published is refused
    view = await saga.view()
    assert view.status == "cancelled" and not of(view.history, "compensate")
    assert of(view.history, "claim_rejected")[-1].lease == 1
    assert await saga.cancel() == "cancelled"


async def test_a_cancelled_step_is_announced_again_if_no_scheduler_takes_it_up(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert isinstance(await saga.cancel(), Announce)
    saga.clock.advance(ANNOUNCE_MS)
    assert await saga.recover(0) == Announce(step=0, attempt=1, lease=1)


async def test_cancelling_a_running_step_asks_its_agent_to_stop(saga: Saga) -> None:
    await saga.create([step(0, "undo0")])
    assert await saga.claim(0, 1)
    assert await saga.store.renew("j1", 0, 1, LEASE_MS) == RENEWED
    assert await saga.cancel() == "running"
    assert (await saga.step(0))["status"] == "running"
    assert await saga.store.renew("j1", 0, 1, LEASE_MS) == CANCEL_REQUESTED
    assert await saga.cancel() == "already"
    stopped = ErrorInfo(type="Cancelled", message="stopped", retryable=False)
    assert await saga.record(0, 1, error=stopped)
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_a_cancelled_job_is_not_retried(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.cancel() == "running"
    assert await saga.record(0, 1, error=BOOM, retry_delay_ms=100)
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_cancelling_a_step_waiting_to_retry_removes_its_timer(saga: Saga) -> None:
    await saga.create([step(0)])
    await saga.run(0, error=BOOM, retry_delay_ms=1_000)
    assert await saga.cancel() == Announce(step=0, attempt=1, lease=1)
    assert (
        await saga.redis.zscore(saga.store.keys.timers(saga.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    saga.clock.advance(1_000)
    assert await saga.fire(0) is None
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_cancelling_a_delayed_job_before_it_starts(saga: Saga) -> None:
    await saga.create([step(0)], start_at_ms=saga.clock.now_ms() + 5_000)
    announce = await saga.cancel()
    assert announce == Announce(step=0, attempt=0, lease=0)
    assert (
        await saga.redis.zscore(saga.store.keys.timers(saga.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    done = await saga.advance(0, 0)
    assert isinstance(done, Finished) and done.status == "cancelled"
    saga.clock.advance(5_000)
    assert await saga.fire(0) is None


async def test_cancel_after_a_step_succeeded_compensates_it_and_ends_cancelled(
    saga: Saga,
) -> None:
    await saga.create(saga_steps("undo0", "undo1", "undo2"))
    await saga.run(0, result=b'"r0"')
    lease1 = await saga.lease(1)
    assert await saga.cancel() == Announce(step=1, attempt=1, lease=lease1)
    comp = await saga.advance(1, lease1)
    assert isinstance(comp, DispatchOrder)
    assert (comp.step, comp.compensates, comp.task) == (3, 0, "undo0")
    assert await saga.job_status() == "compensating"
    assert await saga.cancel() == "already"
    done = await saga.run(3)
    assert isinstance(done, Finished) and done.status == "cancelled"
    assert done.error == ""
    view = await saga.view()
    assert [h.step for h in of(view.history, "compensate")] == [3]
    assert view.history[-1].status == "cancelled"


async def test_a_cancel_during_a_compensation_lets_it_finish_compensated(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder)
    assert await saga.cancel() == "compensating"
    assert (await saga.step(comp.step))["status"] == "dispatched"  # it still runs
    done = await saga.run(comp.step)
    assert isinstance(done, Finished) and done.status == "compensated"
    assert json.loads(done.error)["type"] == "PaymentDeclined"


async def test_a_step_that_succeeds_after_the_cancel_is_compensated_too(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "undo1", "undo2"))
    await saga.run(0)
    lease1 = await saga.lease(1)
    assert await saga.claim(1, lease1)
    assert await saga.cancel() == "running"
    assert await saga.record(1, lease1, result=b'"r1"')  # it finished anyway
    first = await saga.advance(1, lease1)
    assert isinstance(first, DispatchOrder) and first.compensates == 1
    second = await saga.run(first.step)
    assert isinstance(second, DispatchOrder) and second.compensates == 0
    done = await saga.run(second.step)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_renewing_a_compensation_of_a_cancelled_job_does_not_stop_it(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "undo1"))
    await saga.run(0)
    assert isinstance(await saga.cancel(), Announce)
    comp = await saga.advance(1, await saga.lease(1))
    assert isinstance(comp, DispatchOrder) and comp.compensates == 0
    assert await saga.claim(comp.step, comp.lease)
    assert await saga.store.renew("j1", comp.step, comp.lease, LEASE_MS) == RENEWED


async def test_a_cancelled_job_whose_agent_died_is_not_redispatched(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.cancel() == "running"
    saga.clock.advance(LEASE_MS)  # the agent died before it learned of the cancel
    outcome = await saga.recover(0)
    assert not isinstance(outcome, DispatchOrder), outcome


async def test_a_job_cancelled_before_it_is_recorded_is_created_cancelled(saga: Saga) -> None:
    assert await saga.cancel("early") == "unknown"
    created = await saga.create(saga_steps("undo0"), job_id="early")
    assert (created.created, created.job_status, created.order) == (True, "cancelled", None)
    view = await saga.view("early")
    assert view.status == "cancelled"
    assert [h.event for h in view.history] == ["submit", "cancelled"]
    assert view.history[-1].by == "client-1"
    assert await saga.redis.exists(saga.store.keys.cancel_marker("early")) == 0
    assert (
        await saga.redis.zscore(
            saga.store.keys.deadlines(saga.store.keys.bucket_of("early")), "early|0"
        )
        is None
    )
    assert await saga.claim(0, 0, job_id="early") is False
    again = await saga.create(saga_steps("undo0"), job_id="early")
    assert (again.created, again.job_status) == (False, "cancelled")
    assert await saga.cancel("early") == "cancelled"


async def test_a_job_cancelled_on_arrival_expires_like_any_finished_job(saga: Saga) -> None:
    await saga.cancel("early")
    await saga.create([step(0)], job_id="early")
    assert await saga.redis.ttl(saga.store.keys.job("early")) > 0


# --- results of earlier steps -----------------------------------------------------------------


async def test_step_results_returns_what_earlier_steps_recorded(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "", ""))
    await saga.run(0, result=b'{"reserved":3}')
    await saga.run(1, result=b'"charged"')
    assert await saga.store.step_results("j1", range(3)) == [{"reserved": 3}, "charged", None]
    comp = await saga.run(2, error=DECLINED)
    assert isinstance(comp, DispatchOrder)
    # What a compensation of step 0 reads (ctx.compensated_result()).
    assert await saga.store.step_results("j1", range(0, 1)) == [{"reserved": 3}]


async def test_a_duplicate_advance_after_the_end_returns_the_same_finish(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    lease1 = await saga.lease(1)
    comp = await saga.run(1, error=DECLINED)
    done = await saga.run(comp.step)
    assert isinstance(done, Finished)
    for index, lease in ((comp.step, comp.lease), (1, lease1), (0, 1), (1, 999)):
        assert await saga.advance(index, lease) == done


# --- property: whatever happens, in whatever order -------------------------------------------

NSTEPS = 3
# Mostly the step and lease a healthy fleet would use; sometimes stale or made-up ones.
STEP_CHOICE = st.sampled_from(["current", "current", "current", *range(2 * NSTEPS)])
LEASE_CHOICE = st.sampled_from(["current", "current", "current", "stale", 0, 1, 5])
DELAY = st.sampled_from([None, 0, 300, 4_000])
# A whole attempt (claim, record, advance), nearly always of the current dispatch.
ATTEMPT = st.tuples(
    st.just("attempt"),
    st.sampled_from(["current"] * 9 + [*range(2 * NSTEPS)]),
    st.sampled_from(["current"] * 9 + ["stale", 0, 5]),
    st.sampled_from(["ok", "ok", "ok", None, 0, 300]),
)
TICK = st.tuples(st.just("tick"), st.sampled_from([1, 300, 1_000, 2_000, 4_000, 30_000]))
OPERATION = st.one_of(
    *[ATTEMPT] * 6,
    TICK,
    st.tuples(st.just("claim"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("succeed"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("fail"), STEP_CHOICE, LEASE_CHOICE, DELAY),
    st.tuples(st.just("advance"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("renew"), STEP_CHOICE, LEASE_CHOICE),
    st.tuples(st.just("recover"), STEP_CHOICE),
    st.tuples(st.just("fire"), STEP_CHOICE),
    st.tuples(st.just("cancel")),
)
# How the healthy fleet's attempts end once it takes over (used in turn).
DRIVE = st.lists(st.sampled_from(["ok", "ok", "ok", "no_retry", "retry"]), min_size=1, max_size=8)


async def _resolve(saga: Saga, job_id: str, op: tuple[Any, ...]) -> tuple[int, int]:
    """The step and lease an operation names: "current" ones, or stale and made-up ones."""
    index = op[1]
    if index == "current":
        index = int(await saga.redis.hget(saga.store.keys.job(job_id), "current") or 0)
    choice = op[2] if len(op) > 2 else "current"
    current = await saga.lease(index, job_id)
    lease = {"current": current, "stale": current - 1}.get(choice, choice)
    return index, int(lease)


async def _apply(saga: Saga, job_id: str, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "tick":
        saga.clock.advance(op[1])
        return None
    if kind == "cancel":
        return await saga.cancel(job_id)
    index, lease = await _resolve(saga, job_id, op)
    if kind == "claim":
        return await saga.claim(index, lease, job_id=job_id, max_attempts=2)
    if kind == "succeed":
        return await saga.record(index, lease, job_id=job_id, result=b'"ok"')
    if kind == "fail":
        return await saga.record(index, lease, job_id=job_id, error=BOOM, retry_delay_ms=op[3])
    if kind == "advance":
        return await saga.advance(index, lease, job_id)
    if kind == "attempt":
        await saga.claim(index, lease, job_id=job_id, max_attempts=2)
        if op[3] == "ok":
            await saga.record(index, lease, job_id=job_id, result=b'"ok"')
        else:
            await saga.record(index, lease, job_id=job_id, error=BOOM, retry_delay_ms=op[3])
        return await saga.advance(index, lease, job_id)
    if kind == "renew":
        return await saga.store.renew(job_id, index, lease, LEASE_MS)
    if kind == "recover":
        return await saga.recover(index, job_id)
    return await saga.fire(index, job_id)


async def _check_invariants(saga: Saga, job_id: str, ended: str | None) -> str | None:
    """Asserts what the design guarantees; returns the job's terminal status, if any."""
    status = await saga.job_status(job_id)
    assert status in set(JobStatus)
    if ended is not None:
        assert status == ended, f"terminal {ended} moved to {status}"
    raw = await saga.redis.lrange(saga.store.keys.history(job_id), 0, -1)
    history = [json.loads(r) for r in raw]
    compensations = [h["step"] for h in history if h["event"] == "compensate"]
    assert all(n == 1 for n in Counter(compensations).values()), compensations
    undone = [i - NSTEPS for i in compensations]
    assert undone == sorted(undone, reverse=True), f"not in reverse order: {undone}"
    for i in undone:  # only steps that succeeded and named a compensation are undone
        forward = await saga.step(i, job_id)
        assert (forward["status"], forward["compensation"] != "") == ("succeeded", True)
    leases = [h["lease"] for h in history if h["event"] in LEASING_EVENTS]
    assert all(a < b for a, b in pairwise(leases)), leases
    return status if status in JOB_TERMINAL else None


async def _drive_to_the_end(saga: Saga, job_id: str, ended: str | None, outcomes: list[str]) -> str:
    """A healthy fleet takes over: every job must then reach a terminal state."""
    keys, seen = saga.store.keys, []
    for turn in range(60):
        if ended is not None:
            return ended
        index = int(await saga.redis.hget(keys.job(job_id), "current") or 0)
        s = await saga.step(index, job_id)
        lease, member = int(s["lease"]), f"{job_id}|{index}"
        seen.append((index, s["status"], lease))
        if s["status"] == "dispatched":  # an agent takes it and runs it
            outcome = outcomes[turn % len(outcomes)]
            assert await saga.claim(index, lease, job_id=job_id, max_attempts=2)
            if outcome == "ok":
                assert await saga.record(index, lease, job_id=job_id, result=b'"ok"')
            else:
                delay = 300 if outcome == "retry" else None
                assert await saga.record(
                    index, lease, job_id=job_id, error=BOOM, retry_delay_ms=delay
                )
            await saga.advance(index, lease, job_id)
        elif s["status"] == "running":  # its agent is gone: the supervisor steps in
            saga.clock.advance(LEASE_MS)
            await saga.recover(index, job_id)
        elif s["status"] in ("succeeded", "failed"):  # the scheduler takes up the outcome
            await saga.advance(index, lease, job_id)
        else:  # pending or waiting_retry: the scheduler fires its timer when due
            due = await saga.redis.zscore(keys.timers(keys.bucket_of(job_id)), member)
            assert due is not None, f"{s['status']} step {index} has no timer: it is lost"
            saga.clock.advance(max(0, int(due) - saga.clock.now_ms()))
            await saga.fire(index, job_id)
        ended = await _check_invariants(saga, job_id, ended)
    raise AssertionError(f"job {job_id} never ended: {seen}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    delayed=st.booleans(),
    operations=st.lists(OPERATION, min_size=5, max_size=60),
    outcomes=DRIVE,
)
async def test_no_sequence_of_calls_breaks_the_invariants(
    saga: Saga, delayed: bool, operations: list[tuple[Any, ...]], outcomes: list[str]
) -> None:
    """Agents, schedulers, supervisors and clients calling in any order, with stale,
    duplicated and made-up steps and leases, while time jumps: a terminal job status is
    final, each forward step is compensated at most once (in reverse order, only if it
    succeeded and names a compensation), lease tokens handed out only grow; and once a
    healthy fleet takes over, the job ends."""
    job_id = f"p-{uuid4().hex[:10]}"  # a fresh job per example (same prefix, cleaned after)
    steps = [
        step(0, "undo0", max_attempts=2, timeout_ms=3_000, schedule_to_start_ms=1_000),
        step(1, "undo1", max_attempts=2, schedule_to_close_ms=8_000),
        step(2, max_attempts=2, schedule_to_start_ms=2_000),
    ]
    start_at = saga.clock.now_ms() + 1_000 if delayed else 0
    await saga.create(steps, job_id=job_id, start_at_ms=start_at)
    ended = await _check_invariants(saga, job_id, None)
    for op in operations:
        await _apply(saga, job_id, op)
        ended = await _check_invariants(saga, job_id, ended)
    event(f"ended {ended} under interference" if ended else "active after interference")
    ended = await _drive_to_the_end(saga, job_id, ended, outcomes)
    event(f"ended {ended}")
    history = (await saga.view(job_id)).history
    event("compensated some step" if of(history, "compensate") else "compensated nothing")
