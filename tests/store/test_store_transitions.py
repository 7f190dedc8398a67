"""StateStore against real Redis: every Lua script, with time under the test's control."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis_cluster_support import RedisTarget
from store_support import scripts_on

from sasfleet.shared.clock import ManualClock
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.keys import deadline_member
from sasfleet.shared.state.reads import JobReader
from sasfleet.shared.state.records import (
    Announce,
    DispatchOrder,
    Finished,
    NewJob,
    NewStep,
)
from sasfleet.shared.state.store import StateStore
from sasfleet.shared.state.views import HistoryEntry
from sasfleet.shared.statemachine import STEP_MOVES, Move, StepStatus

DISPATCH_MS, LEASE_MS, ANNOUNCE_MS, TTL_S = 5_000, 2_000, 30_000, 600
BOOM = ErrorInfo(type="RuntimeError", message="boom", retryable=True)


def who_what(h: HistoryEntry) -> tuple[object, ...]:
    return (h.event, h.by, h.lease, h.previous, h.status, h.detail)


@dataclass
class Fleet:
    redis: aioredis.Redis
    prefix: str
    clock: ManualClock
    store: StateStore
    reader: JobReader
    max_attempts: int = 3  # what the agent resolves and records when it claims

    async def create(self, job_id: str = "j1", *, steps: int = 1, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts
        job = NewJob(
            job_id,
            [
                NewStep(
                    f"task{i}",
                    "default",
                    f'{{"i":{i}}}'.encode(),
                    max_attempts,
                    60_000,
                    schedule_to_start_ms=DISPATCH_MS,
                )
                for i in range(steps)
            ],
        )
        assert (await self.store.create_job(job, "scheduler-1")).created

    async def step(self, job_id: str = "j1", index: int = 0) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.store.keys.step(job_id, index)))

    async def events(self) -> list[str]:
        view = await self.reader.job("j1")
        assert view is not None
        return [h.event for h in view.history]

    async def claim(self, lease: int, agent: str = "agent-a", step: int = 0) -> bool:
        return await self.store.claim("j1", step, lease, agent, LEASE_MS, self.max_attempts)

    async def record(
        self,
        lease: int,
        agent: str = "agent-a",
        *,
        step: int = 0,
        retry_delay_ms: int | None = None,
        **outcome: Any,
    ) -> object:
        return await self.store.record(
            "j1",
            step,
            lease,
            agent,
            **outcome,
            retry_delay_ms=retry_delay_ms,
            announce_after_ms=ANNOUNCE_MS,
        )

    async def advance(self, step: int, lease: int) -> object:
        return await self.store.advance("j1", step, lease, "scheduler-1", ttl_s=TTL_S)

    async def recover(self, store: StateStore | None = None, step: int = 0) -> object:
        return await (store or self.store).recover(
            "j1", step, "supervisor-1", announce_after_ms=ANNOUNCE_MS
        )

    async def fire(self, store: StateStore | None = None, step: int = 0) -> object:
        return await (store or self.store).fire_timer(
            "j1", step, "scheduler-1", announce_after_ms=ANNOUNCE_MS
        )

    async def cancel(self) -> object:
        return await self.store.cancel("j1", "client-1", announce_after_ms=ANNOUNCE_MS, ttl_s=TTL_S)


@pytest.fixture
async def fleet(redis_target: RedisTarget) -> AsyncIterator[Fleet]:
    async with scripts_on(redis_target, Fleet) as harness:
        yield harness


async def test_create_job_dispatches_step_zero_and_a_duplicate_creates_nothing(
    fleet: Fleet,
) -> None:
    step = NewStep("echo", "p1", b'{"x":1}', 3, 9_000, schedule_to_start_ms=DISPATCH_MS)
    job = NewJob("j1", [step], idempotency_key="k1")
    first = await fleet.store.create_job(job, "scheduler-1")
    assert (first.created, first.job_status, first.step_status) == (True, "running", "dispatched")
    assert first.order == DispatchOrder("j1", 0, 1, 1, "echo", "p1", '{"x":1}', 9_000)
    other = NewJob("j1", [NewStep("other", "p2", b"2", 1, 1), NewStep("x", "p", b"3", 1, 1)])
    again = await fleet.store.create_job(other, "scheduler-2")
    assert (again.created, again.job_status, again.step_status) == (False, "running", "dispatched")
    assert again.order == first.order
    assert await fleet.redis.zcard(fleet.store.keys.jobs(fleet.store.keys.bucket_of("j1"))) == 1
    view = await fleet.reader.job("j1")
    assert view is not None and [s.task for s in view.steps] == ["echo"]
    assert view.idempotency_key == "k1" and view.submitted_by == "scheduler-1"
    assert [h.event for h in view.history] == ["submit", "start", "dispatch"]
    # The step's own schedule-to-start timeout sets its dispatch deadline.
    assert await fleet.redis.zscore(
        fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1")), deadline_member("j1", 0)
    ) == (fleet.clock.now_ms() + DISPATCH_MS)


async def test_claim_needs_the_current_lease_and_a_rejection_is_in_the_history(
    fleet: Fleet,
) -> None:
    await fleet.create()
    assert await fleet.claim(7, "agent-b") is False
    assert (await fleet.step())["status"] == "dispatched"
    assert await fleet.claim(1) is True
    step = await fleet.step()
    assert (step["status"], step["locked_by"]) == ("running", "agent-a")
    assert await fleet.redis.zscore(
        fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1")), "j1|0"
    ) == (fleet.clock.now_ms() + LEASE_MS)
    view = await fleet.reader.job("j1")
    assert view is not None
    rejected, claimed = map(who_what, view.history[-2:])
    assert rejected == ("claim_rejected", "agent-b", 7, "dispatched", None, "current lease 1")
    assert claimed == ("claim", "agent-a", 1, "dispatched", "running", None)


async def test_claim_records_the_agents_resolved_max_attempts(fleet: Fleet) -> None:
    await fleet.create(max_attempts=3)
    assert await fleet.store.claim("j1", 0, 1, "agent-a", LEASE_MS, 5)
    assert (await fleet.step())["max_attempts"] == "5"


async def test_recorded_success_then_advance_finishes_the_job_with_its_result(
    fleet: Fleet,
) -> None:
    await fleet.create()
    assert await fleet.claim(1)
    assert await fleet.record(1, result=b'{"ok":true}')
    assert (await fleet.step())["status"] == "succeeded"
    done = await fleet.advance(0, 1)
    assert isinstance(done, Finished)
    assert (done.status, done.result, done.error) == ("succeeded", '{"ok":true}', "")
    view = await fleet.reader.job("j1")
    assert view is not None and (view.status, view.result) == ("succeeded", {"ok": True})
    assert (
        await fleet.redis.zscore(
            fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1")), "j1|0"
        )
        is None
    )
    assert 0 < await fleet.redis.ttl(fleet.store.keys.job("j1")) <= TTL_S
    assert await fleet.advance(0, 1) == done  # a duplicate announcement changes nothing


async def test_the_agent_advances_a_job_when_it_records_a_steps_success(
    fleet: Fleet,
) -> None:
    await fleet.create(steps=2)
    assert await fleet.claim(1)
    deadlines = fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1"))
    # Not the last step: the next one is dispatched in the same script, for the agent to
    # publish; the recorded step stays due until the agent says it published it.
    order = await fleet.record(1, result=b"0", finish_ttl_s=TTL_S)
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.task, order.payload) == (1, 1, "task1", '{"i":1}')
    assert (await fleet.step(index=1))["status"] == "dispatched"
    now = fleet.clock.now_ms()
    assert await fleet.redis.zscore(deadlines, "j1|0") == now + ANNOUNCE_MS
    assert await fleet.redis.zscore(deadlines, "j1|1") == now + DISPATCH_MS
    await fleet.store.settle_advance("j1", 0)
    assert await fleet.redis.zscore(deadlines, "j1|0") is None
    assert await fleet.advance(0, 1) == order  # an announcement would hand out the same
    assert await fleet.claim(order.lease, "agent-b", step=1)
    done = await fleet.record(order.lease, "agent-b", step=1, result=b'"ok"', finish_ttl_s=TTL_S)
    assert done == Finished("succeeded", "", "", '"ok"', "")
    view = await fleet.reader.job("j1")
    assert view is not None and (view.status, view.result) == ("succeeded", "ok")
    assert [who_what(h)[:2] for h in view.history if h.event != "claim"][-4:] == [
        ("succeed", "agent-a"),  # step 0's success...
        ("dispatch", "agent-a"),  # ...and step 1's dispatch, in the same script
        ("succeed", "agent-b"),  # the last step's success...
        ("succeed", "agent-b"),  # ...and the job's
    ]
    assert await fleet.redis.zscore(deadlines, "j1|1") is None
    assert 0 < await fleet.redis.ttl(fleet.store.keys.step("j1", 1)) <= TTL_S
    assert await fleet.advance(1, order.lease) == done  # a late announcement changes nothing


async def test_a_supervisor_publishes_the_next_dispatch_an_agent_left_unconfirmed(
    fleet: Fleet,
) -> None:
    await fleet.create(steps=3, max_attempts=1)
    assert await fleet.claim(1)
    order = await fleet.record(1, result=b"0", finish_ttl_s=TTL_S)
    assert isinstance(order, DispatchOrder)
    # The agent died before its publish was confirmed: once the recorded step is due,
    # the supervisor hands out the same first attempt, spending no attempt of it.
    assert await fleet.recover() is None  # not due yet
    fleet.clock.advance(ANNOUNCE_MS)
    again = await fleet.recover()
    assert again == order
    assert (await fleet.events())[-1] == "republish"
    assert await fleet.recover() is None  # not due again yet
    # Published twice, claimed once: the job goes on with attempt 1 of step 1.
    assert await fleet.claim(order.lease, "agent-b", step=1)
    assert not await fleet.claim(order.lease, "agent-c", step=1)
    fleet.clock.advance(ANNOUNCE_MS)
    assert await fleet.recover() is None  # claimed: the repair is over
    deadlines = fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1"))
    assert await fleet.redis.zscore(deadlines, "j1|0") is None
    nxt = await fleet.record(order.lease, "agent-b", step=1, result=b"1", finish_ttl_s=TTL_S)
    assert isinstance(nxt, DispatchOrder) and (nxt.step, nxt.attempt) == (2, 1)


async def test_a_claimed_next_step_is_not_published_again(fleet: Fleet) -> None:
    await fleet.create(steps=2)
    assert await fleet.claim(1)
    order = await fleet.record(1, result=b"0", finish_ttl_s=TTL_S)
    assert isinstance(order, DispatchOrder)
    assert await fleet.claim(order.lease, "agent-b", step=1)  # the publish did go out
    fleet.clock.advance(ANNOUNCE_MS)
    assert await fleet.recover() is None  # the step moved on: nothing to repair
    assert (await fleet.events())[-1] == "claim"


async def test_a_cancelled_or_failing_last_step_is_left_to_the_scheduler(fleet: Fleet) -> None:
    await fleet.create()
    assert await fleet.claim(1)
    assert await fleet.record(1, error=BOOM, retry_delay_ms=100, finish_ttl_s=TTL_S) is True
    assert (await fleet.reader.job("j1")).status == "running"  # type: ignore[union-attr]
    await fleet.create("j2")
    assert await fleet.store.claim("j2", 0, 1, "agent-a", LEASE_MS, 3)
    await fleet.store.cancel("j2", "client-1", announce_after_ms=ANNOUNCE_MS, ttl_s=TTL_S)
    recorded = await fleet.store.record(
        "j2", 0, 1, "agent-a", result=b"1", retry_delay_ms=None,
        announce_after_ms=ANNOUNCE_MS, finish_ttl_s=TTL_S,
    )  # fmt: skip
    assert recorded is True  # the scheduler decides what a cancelled job does next
    done = await fleet.store.advance("j2", 0, 1, "scheduler-1", ttl_s=TTL_S)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_three_step_job_advances_one_step_at_a_time(fleet: Fleet) -> None:
    await fleet.create(steps=3)
    lease, outcome = 1, None
    for i in range(3):
        assert (await fleet.step(index=i))["status"] == "dispatched"
        if i + 1 < 3:
            assert (await fleet.step(index=i + 1))["status"] == "pending"
        assert await fleet.claim(lease, step=i)
        assert await fleet.record(lease, result=f"{i}".encode(), step=i)
        outcome = await fleet.advance(i, lease)
        if i < 2:
            assert isinstance(outcome, DispatchOrder)
            assert (outcome.step, outcome.attempt, outcome.task) == (i + 1, 1, f"task{i + 1}")
            assert outcome.lease > lease and outcome.payload == f'{{"i":{i + 1}}}'
            # A duplicate announcement may hand out the same order again, never a new one.
            assert await fleet.advance(i, lease) in (None, outcome)
            lease = outcome.lease
    assert isinstance(outcome, Finished) and (outcome.status, outcome.result) == ("succeeded", "2")
    next_step = ["claim", "succeed", "dispatch"]
    start, end = ["submit", "start", "dispatch"], ["claim", "succeed", "succeed"]
    assert await fleet.events() == start + next_step * 2 + end


async def test_a_stale_result_is_rejected_recorded_and_leaves_the_step_alone(
    fleet: Fleet,
) -> None:
    await fleet.create()
    assert await fleet.claim(1, "agent-old")
    fleet.clock.advance(LEASE_MS + 1)
    order = await fleet.recover()
    assert isinstance(order, DispatchOrder) and (order.attempt, order.lease) == (2, 2)
    before = await fleet.step()
    assert await fleet.record(1, "agent-old", result=b'"late"') is False
    assert await fleet.step() == before
    view = await fleet.reader.job("j1")
    assert view is not None
    rejected = ("stale_result_rejected", "agent-old", 1, "dispatched", "succeeded")
    assert who_what(view.history[-1]) == (*rejected, "current lease 2")


async def test_a_retryable_failure_waits_for_its_backoff_then_the_timer_retries_it(
    fleet: Fleet,
) -> None:
    await fleet.create()
    assert await fleet.claim(1)
    assert await fleet.record(1, error=BOOM, retry_delay_ms=1_500)  # the agent's choice
    due = await fleet.advance(0, 1)
    assert due == fleet.clock.now_ms() + 1_500
    assert (await fleet.step())["status"] == "waiting_retry"
    assert await fleet.redis.hget(fleet.store.keys.job("j1"), "status") == "running"
    # The backoff is a timer for the scheduler, not a deadline for the supervisor.
    assert (
        await fleet.redis.zscore(fleet.store.keys.timers(fleet.store.keys.bucket_of("j1")), "j1|0")
        == due
    )
    assert (
        await fleet.redis.zscore(
            fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1")), "j1|0"
        )
        is None
    )
    fleet.clock.advance(1_499)
    assert await fleet.fire() is None
    assert await fleet.recover() is None
    fleet.clock.advance(1)
    assert await fleet.recover() is None  # the supervisor does not handle WAITING_RETRY
    order = await fleet.fire()
    assert isinstance(order, DispatchOrder) and (order.attempt, order.lease) == (2, 2)
    assert (await fleet.events())[-2:] == ["retry_later", "retry"]
    assert (
        await fleet.redis.zscore(fleet.store.keys.timers(fleet.store.keys.bucket_of("j1")), "j1|0")
        is None
    )
    assert await fleet.redis.zscore(
        fleet.store.keys.deadlines(fleet.store.keys.bucket_of("j1")), "j1|0"
    ) == (fleet.clock.now_ms() + DISPATCH_MS)


async def test_recover_waits_for_the_deadline_then_redispatches_with_a_new_lease(
    fleet: Fleet,
) -> None:
    await fleet.create()
    assert await fleet.recover() is None
    fleet.clock.advance(DISPATCH_MS - 1)
    assert await fleet.recover() is None
    fleet.clock.advance(1)
    order = await fleet.recover()
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.lease, order.task) == (0, 2, 2, "task0")
    step = await fleet.step()
    assert (step["status"], step["attempt"], step["lease"]) == ("dispatched", "2", "2")
    assert await fleet.claim(1) is False


async def test_two_supervisors_recover_one_overdue_step_exactly_once(
    fleet: Fleet, redis_target: RedisTarget
) -> None:
    await fleet.create()
    fleet.clock.advance(DISPATCH_MS)
    other_redis = redis_target.connect()
    try:
        other = StateStore(other_redis, fleet.prefix, fleet.clock)
        results = await asyncio.gather(fleet.recover(), fleet.recover(other))
    finally:
        await other_redis.aclose()
    orders = [r for r in results if isinstance(r, DispatchOrder)]
    assert len(orders) == 1 and results.count(None) == 1
    assert (await fleet.events()).count("redispatch") == 1
    assert (await fleet.step())["attempt"] == "2"


async def test_a_timeout_on_the_last_attempt_fails_the_step_and_then_the_job(
    fleet: Fleet,
) -> None:
    await fleet.create(max_attempts=1)
    assert await fleet.claim(1)
    fleet.clock.advance(LEASE_MS)
    assert await fleet.recover() == Announce(step=0, attempt=1, lease=1)
    step = await fleet.step()
    error = json.loads(step["error"])
    assert step["status"] == "failed" and "locked_by" not in step
    # The lease ran out long before the 60 s start-to-close limit: the agent died or hung.
    assert (error["type"], error["retryable"]) == ("LeaseExpired", False)
    done = await fleet.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "failed"
    assert json.loads(done.error)["type"] == "LeaseExpired"
    view = await fleet.reader.job("j1")
    assert view is not None and view.status == "failed"
    timeout_fail, job_end = view.history[-2:]
    assert (timeout_fail.event, timeout_fail.step, timeout_fail.status) == (
        "timeout_fail",
        0,
        "failed",
    )
    # The job's own end (no step): running -> failed.
    assert (job_end.step, job_end.previous, job_end.status) == (None, "running", "failed")


async def test_resubmitting_a_rejected_job_id_reports_the_failed_job(fleet: Fleet) -> None:
    bad = ErrorInfo(type="BadMessage", message="no task", retryable=False)
    assert await fleet.store.fail_submission("j1", bad, "scheduler-1", "", "", TTL_S)
    job = NewJob("j1", [NewStep("echo", "default", b"1", 3, 1_000)])
    again = await fleet.store.create_job(job, "scheduler-1")
    assert (again.created, again.job_status, again.order) == (False, "failed", None)


# --- the state machine's table, walked against the scripts ----------------------------------

WALKED_MOVES = [
    Move.CLAIM,
    Move.SUCCEED,
    Move.FAIL,
    Move.REDISPATCH,
    Move.TIMEOUT_FAIL,
    Move.RETRY,
    Move.CANCEL,
]


@pytest.mark.parametrize("source", list(StepStatus))
@pytest.mark.parametrize("move", WALKED_MOVES)
async def test_step_scripts_accept_exactly_the_moves_of_the_table(
    fleet: Fleet, move: Move, source: StepStatus
) -> None:
    allowed, target = STEP_MOVES[move]
    # A timeout fails only a last attempt; otherwise the supervisor re-dispatches.
    await fleet.create(max_attempts=1 if move is Move.TIMEOUT_FAIL else 3)
    job_key = fleet.store.keys.job("j1")
    current = int(str(await fleet.redis.hget(job_key, "current")))  # the step cancel reads
    step_key = fleet.store.keys.step("j1", current)
    await fleet.redis.hset(step_key, "status", source.value)  # test setup
    seen = len(await fleet.events())
    reply: object = None
    if move is Move.CLAIM:
        reply = await fleet.claim(1)
    elif move is Move.SUCCEED:
        reply = await fleet.record(1, result=b"1")
    elif move is Move.FAIL:
        reply = await fleet.record(1, error=BOOM)
    elif move is Move.RETRY:
        # A due retry timer (test setup); the scheduler fires it.
        await fleet.redis.zadd(
            fleet.store.keys.timers(fleet.store.keys.bucket_of("j1")),
            {"j1|0": fleet.clock.now_ms()},
        )
        reply = await fleet.fire()
    elif move is Move.CANCEL:
        reply = await fleet.cancel()
    else:
        fleet.clock.advance(DISPATCH_MS)
        reply = await fleet.recover()
    status = str(await fleet.redis.hget(step_key, "status") or "")
    accepted = move.value in (await fleet.events())[seen:] and status == target
    assert accepted is (source in allowed), f"{move} from {source} -> now {status} ({reply!r})"
    if move is Move.RETRY:
        assert isinstance(reply, DispatchOrder) is accepted
    if move is Move.CANCEL:
        assert isinstance(reply, Announce) is accepted
        # The job is marked cancelled either way; a running step learns it on renewal.
        assert await fleet.redis.hget(job_key, "cancel_requested") == "1"
    if not accepted and move in (Move.CLAIM, Move.SUCCEED, Move.FAIL, Move.RETRY, Move.CANCEL):
        assert status == source  # a refused call changes nothing
