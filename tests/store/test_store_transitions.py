"""StateStore against real Redis: creation, claims, outcomes and what follows them, stale
results, deadlines and retry timers; with time under the test's control."""

from __future__ import annotations

import asyncio
import hashlib
import json

import msgspec
import pytest
from redis_cluster_support import RedisTarget
from store_support import (
    ANNOUNCE_MS,
    BOOM,
    DEFAULTS,
    DISPATCH_MS,
    FIRST_BACKOFF_MS,
    FLEET,
    LEASE_MS,
    TTL_S,
    Saga,
    again,
    dispatched,
    of,
    payload,
    repeated,
    step,
)

from sasfleet.shared.errors import DispatchMismatch
from sasfleet.shared.messages.dispatch import DispatchOrder, StepDispatch
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.messages.submit import RetrySpec, StepSpec
from sasfleet.shared.state.records import (
    Finished,
    Fired,
    Recorded,
    Recovered,
    RetryLater,
    Stale,
)
from sasfleet.shared.state.store import CreateResult, NewJob, step_record
from sasfleet.shared.state.views import HistoryEntry
from sasfleet.shared.statemachine import RetryPolicy


def who_what(h: HistoryEntry) -> tuple[object, ...]:
    return (h.event, h.by, h.lease, h.previous, h.status, h.detail)


async def test_create_job_dispatches_step_zero_and_a_duplicate_creates_nothing(
    saga: Saga,
) -> None:
    spec = StepSpec(task="echo", pool="p1", payload={"x": 1}, max_attempts=3, timeout_s=9)
    job = NewJob("j1", [step_record(spec, DEFAULTS, FLEET)], idempotency_key="k1")
    first = await saga.store.create_job(job, "scheduler-1")
    assert (first.created, first.job_status, first.step_status) == (True, "running", "dispatched")
    assert first.order is not None
    assert msgspec.structs.replace(first.order, message="") == DispatchOrder(
        job_id="j1", step=0, task="echo", attempt=1, lease=1, pool="p1", message=""
    )
    # The dispatch message carries the step's options by their submit names, in seconds.
    assert dispatched(first.order) == StepDispatch(
        job_id="j1",
        step=0,
        task="echo",
        attempt=1,
        lease=1,
        idempotency_key="j1:0",
        timeout_s=9,
        payload=msgspec.Raw(b'{"x":1}'),
        max_attempts=3,
    )
    other_steps = [step_record(StepSpec(task=t), DEFAULTS, FLEET) for t in ("other", "x")]
    again_ = await saga.store.create_job(NewJob("j1", other_steps), "scheduler-2")
    assert (again_.created, again_.job_status, again_.step_status) == (
        False,
        "running",
        "dispatched",
    )
    assert again_.order == again(first.order)  # the same dispatch, handed out again
    k = saga.store.keys
    assert await saga.redis.zcard(k.jobs(k.bucket_of("j1"))) == 1
    view = await saga.view()
    assert [s.task for s in view.steps] == ["echo"]
    assert (view.steps[0].timeout_s, view.steps[0].max_attempts) == (9, 3)
    assert view.idempotency_key == "k1" and view.submitted_by == "scheduler-1"
    assert [h.event for h in view.history] == ["submit", "start", "dispatch"]
    # The step's own schedule-to-start timeout (the fleet's default here) sets its deadline.
    assert await saga.deadline(0) == saga.clock.now_ms() + DISPATCH_MS


async def test_a_step_stores_its_options_in_seconds_and_its_resolved_policy(saga: Saga) -> None:
    retry = RetrySpec(initial_interval_s=0.25, backoff_coefficient=3)
    await saga.create([step(0, timeout_s=1.5, schedule_to_close_s=90, retry=retry)])
    s = await saga.step(0)
    assert (s["timeout_s"], s["schedule_to_start_s"], s["schedule_to_close_s"]) == (
        "1.5",
        "5",
        "90",
    )
    assert "max_attempts" not in s  # only a submitter's explicit choice is kept there
    assert await saga.stored_policy(0) == RetryPolicy(
        max_attempts=3, initial_ms=250, coefficient=3.0
    )
    assert int(s["close_by"]) == saga.clock.now_ms() + 90_000


async def test_claim_needs_the_current_lease_and_a_rejection_is_in_the_history(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 7, agent="agent-b") is False
    assert (await saga.step(0))["status"] == "dispatched"
    assert await saga.claim(0, 1) is True
    s = await saga.step(0)
    assert (s["status"], s["locked_by"]) == ("running", "agent-a")
    assert await saga.deadline(0) == saga.clock.now_ms() + LEASE_MS
    rejected, claimed = map(who_what, (await saga.view()).history[-2:])
    assert rejected == ("claim_rejected", "agent-b", 7, "dispatched", None, "current lease 1")
    assert claimed == ("claim", "agent-a", 1, "dispatched", "running", None)


async def test_claim_stores_the_agents_resolved_retry_policy_and_the_scripts_use_it(
    saga: Saga,
) -> None:
    await saga.create([step(0, max_attempts=3)])
    resolved = RetryPolicy(max_attempts=5, initial_ms=100, coefficient=1.0)
    assert await saga.store.claim("j1", 0, 1, "agent-a", resolved)
    assert await saga.stored_policy(0) == resolved
    assert (await saga.step(0))["max_attempts"] == "3"  # the submitter's choice, kept
    assert (await saga.view()).steps[0].max_attempts == 5  # the view shows the policy's
    assert await saga.record(0, 1, error=BOOM) == Recorded()
    assert await saga.advance(0, 1) == RetryLater(due=saga.clock.now_ms() + 100)


async def test_recorded_success_then_advance_finishes_the_job_with_its_result(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, result=b'{"ok":true}') == Recorded()
    assert (await saga.step(0))["status"] == "succeeded"
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.ended
    assert (done.status, done.result, done.error) == ("succeeded", '{"ok":true}', "")
    view = await saga.view()
    assert (view.status, view.result) == ("succeeded", {"ok": True})
    assert await saga.deadline(0) is None
    assert 0 < await saga.redis.ttl(saga.store.keys.job("j1")) <= TTL_S
    # A duplicate announcement changes nothing, and says it did not end the job.
    assert await saga.advance(0, 1) == repeated(done)


async def test_the_agent_advances_a_job_when_it_records_a_steps_success(saga: Saga) -> None:
    await saga.create([step(0), step(1)])
    assert await saga.claim(0, 1)
    # Not the last step: the next one is dispatched in the same script, for the agent to
    # publish; the recorded step stays due until the agent says it published it.
    order = await saga.record(0, 1, result=b"0", advance=True)
    assert isinstance(order, DispatchOrder) and not order.again
    assert (order.step, order.attempt, order.task, payload(order)) == (1, 1, "task1", {"i": 1})
    assert (await saga.step(1))["status"] == "dispatched"
    now = saga.clock.now_ms()
    assert await saga.deadline(0) == now + ANNOUNCE_MS
    assert await saga.deadline(1) == now + DISPATCH_MS
    await saga.store.settle("j1", 0)
    assert await saga.deadline(0) is None
    assert await saga.advance(0, 1) == again(order)  # an announcement hands out the same
    assert await saga.claim(1, order.lease, agent="agent-b")
    done = await saga.record(1, order.lease, agent="agent-b", result=b'"ok"', advance=True)
    assert done == Finished(status="succeeded", result='"ok"', ended=True)
    view = await saga.view()
    assert (view.status, view.result) == ("succeeded", "ok")
    assert [who_what(h)[:2] for h in view.history if h.event != "claim"][-4:] == [
        ("succeed", "agent-a"),  # step 0's success...
        ("dispatch", "agent-a"),  # ...and step 1's dispatch, in the same script
        ("succeed", "agent-b"),  # the last step's success...
        ("succeed", "agent-b"),  # ...and the job's
    ]
    assert await saga.deadline(1) is None
    assert 0 < await saga.redis.ttl(saga.store.keys.step("j1", 1)) <= TTL_S
    # A late announcement changes nothing.
    assert await saga.advance(1, order.lease) == repeated(done)


async def test_settle_removes_only_a_step_the_job_has_moved_past(saga: Saga) -> None:
    await saga.create([step(0), step(1)])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, result=b"0") == Recorded()  # announced: not advanced
    await saga.store.settle("j1", 0)
    assert await saga.deadline(0) == saga.clock.now_ms() + ANNOUNCE_MS  # still due


async def test_a_supervisor_publishes_the_next_dispatch_an_agent_left_unconfirmed(
    saga: Saga,
) -> None:
    await saga.create([step(i, max_attempts=1) for i in range(3)])
    assert await saga.claim(0, 1)
    order = await saga.record(0, 1, result=b"0", advance=True)
    assert isinstance(order, DispatchOrder)
    # The agent died before its publish was confirmed: once the recorded step is due,
    # the supervisor hands out the same first attempt, spending no attempt of it.
    assert await saga.recover(0) is None  # not due yet
    saga.clock.advance(ANNOUNCE_MS)
    assert await saga.recover(0) == Recovered(next=again(order), repair=True)
    republish = (await saga.view()).history[-1]
    assert (republish.event, republish.step, republish.lease) == ("republish", 1, order.lease)
    assert await saga.deadline(0) == saga.clock.now_ms() + ANNOUNCE_MS  # due again later
    assert await saga.recover(0) is None  # not due again yet
    # Published twice, claimed once: the job goes on with attempt 1 of step 1.
    assert await saga.claim(1, order.lease, agent="agent-b")
    assert not await saga.claim(1, order.lease, agent="agent-c")
    saga.clock.advance(ANNOUNCE_MS)
    assert await saga.recover(0) is None  # claimed: the repair is over
    assert await saga.deadline(0) is None
    nxt = await saga.record(1, order.lease, agent="agent-b", result=b"1", advance=True)
    assert isinstance(nxt, DispatchOrder) and (nxt.step, nxt.attempt) == (2, 1)


async def test_a_claimed_next_step_is_not_published_again(saga: Saga) -> None:
    await saga.create([step(0), step(1)])
    assert await saga.claim(0, 1)
    order = await saga.record(0, 1, result=b"0", advance=True)
    assert isinstance(order, DispatchOrder)
    assert await saga.claim(1, order.lease, agent="agent-b")  # the publish did go out
    saga.clock.advance(ANNOUNCE_MS)
    assert await saga.recover(0) is None  # the step moved on: nothing to repair
    assert (await saga.events())[-1] == "claim"
    assert await saga.advance(0, 1) == Stale(why="already advanced")


async def test_a_recorded_outcome_no_scheduler_takes_up_is_followed_by_the_supervisor(
    saga: Saga,
) -> None:
    await saga.create([step(0), step(1)])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, result=b"0") == Recorded()  # its announcement is lost
    saga.clock.advance(ANNOUNCE_MS - 1)
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.repair
    assert recovered.failure is None
    nxt = recovered.next
    assert isinstance(nxt, DispatchOrder) and (nxt.step, nxt.attempt, nxt.again) == (1, 1, False)
    assert await saga.deadline(0) is None  # followed: nothing left to repair
    assert "republish" not in await saga.events()
    # The scheduler's late announcement hands out the same dispatch, and makes nothing new.
    assert await saga.advance(0, 1) == again(nxt)


async def test_a_failure_or_a_cancelled_jobs_success_is_left_to_the_scheduler(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, error=BOOM, advance=True) == Recorded()
    assert await saga.job_status() == "running"
    assert (await saga.step(0))["status"] == "failed"
    await saga.create([step(0)], job_id="j2")
    assert await saga.claim(0, 1, job_id="j2")
    assert await saga.cancel("j2") == "running"
    recorded = await saga.record(0, 1, job_id="j2", result=b"1", advance=True)
    assert recorded == Recorded()  # the scheduler decides what a cancelled job does next
    done = await saga.advance(0, 1, "j2")
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_three_step_job_advances_one_step_at_a_time(saga: Saga) -> None:
    await saga.create([step(i) for i in range(3)])
    lease, outcome = 1, None
    for i in range(3):
        assert (await saga.step(i))["status"] == "dispatched"
        if i + 1 < 3:
            assert (await saga.step(i + 1))["status"] == "pending"
        assert await saga.claim(i, lease)
        assert await saga.record(i, lease, result=f"{i}".encode()) == Recorded()
        outcome = await saga.advance(i, lease)
        if i < 2:
            assert isinstance(outcome, DispatchOrder)
            assert (outcome.step, outcome.attempt, outcome.task) == (i + 1, 1, f"task{i + 1}")
            assert outcome.lease > lease and payload(outcome) == {"i": i + 1}
            # A duplicate announcement may hand out the same order again, never a new one.
            assert await saga.advance(i, lease) == again(outcome)
            lease = outcome.lease
    assert isinstance(outcome, Finished) and (outcome.status, outcome.result) == ("succeeded", "2")
    next_step = ["claim", "succeed", "dispatch"]
    start, end = ["submit", "start", "dispatch"], ["claim", "succeed", "succeed"]
    assert await saga.events() == start + next_step * 2 + end


async def test_an_advance_with_a_superseded_lease_changes_nothing(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, error=BOOM) == Recorded()
    before = await saga.step(0)
    assert await saga.advance(0, 7) == Stale(why="superseded")
    assert await saga.step(0) == before


async def test_a_stale_result_is_rejected_recorded_and_leaves_the_step_alone(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1, agent="agent-old")
    saga.clock.advance(LEASE_MS + 1)
    recovered = await saga.recover(0)  # the lease ran out: the attempt failed
    assert isinstance(recovered, Recovered) and isinstance(recovered.next, RetryLater)
    # Waiting for its retry, the step refuses the old holder's result...
    before = await saga.step(0)
    stale = await saga.record(0, 1, agent="agent-old", result=b'"late"')
    assert stale == Stale(status="waiting_retry", lease=1)
    assert await saga.step(0) == before
    # ...and so it does once the retry holds a new lease.
    saga.clock.advance(FIRST_BACKOFF_MS)
    fired = await saga.fire(0)
    assert isinstance(fired, Fired) and isinstance(fired.next, DispatchOrder)
    assert (fired.next.attempt, fired.next.lease) == (2, 2)
    before = await saga.step(0)
    assert await saga.record(0, 1, agent="agent-old", result=b'"late"') == Stale(
        status="dispatched", lease=2
    )
    assert await saga.step(0) == before
    rejected = ("stale_result_rejected", "agent-old", 1, "dispatched", "succeeded")
    assert who_what((await saga.view()).history[-1]) == (*rejected, "current lease 2")


async def test_a_retryable_failure_waits_for_its_backoff_then_the_timer_retries_it(
    saga: Saga,
) -> None:
    await saga.create([step(0, retry=RetrySpec(initial_interval_s=1.5))])
    assert await saga.claim(0, 1)
    assert await saga.record(0, 1, error=BOOM) == Recorded()
    later = await saga.advance(0, 1)
    due = saga.clock.now_ms() + 1_500  # the step's policy's first backoff
    assert later == RetryLater(due=due)
    assert (await saga.step(0))["status"] == "waiting_retry"
    assert await saga.job_status() == "running"
    # The backoff is a timer for the scheduler, not a deadline for the supervisor.
    assert await saga.timer(0) == due
    assert await saga.deadline(0) is None
    saga.clock.advance(1_499)
    assert await saga.fire(0) is None
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    assert await saga.recover(0) is None  # the supervisor does not handle WAITING_RETRY
    fired = await saga.fire(0)
    assert isinstance(fired, Fired) and fired.failure is None
    order = fired.next
    assert isinstance(order, DispatchOrder) and (order.attempt, order.lease) == (2, 2)
    assert (await saga.events())[-2:] == ["retry_later", "retry"]
    assert await saga.timer(0) is None
    assert await saga.deadline(0) == saga.clock.now_ms() + DISPATCH_MS


async def test_an_unclaimed_dispatch_fails_at_its_deadline_and_retries_after_its_backoff(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.recover(0) is None
    saga.clock.advance(DISPATCH_MS - 1)
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    due = saga.clock.now_ms() + FIRST_BACKOFF_MS
    assert await saga.recover(0) == Recovered(
        failure="ScheduleToStartTimeout", next=RetryLater(due=due)
    )
    s = await saga.step(0)
    assert (s["status"], s["attempt"], s["lease"]) == ("waiting_retry", "1", "1")
    assert json.loads(s["error"])["type"] == "ScheduleToStartTimeout"
    assert await saga.claim(0, 1) is False  # the expired dispatch is refused
    assert (await saga.timer(0), await saga.deadline(0)) == (due, None)
    saga.clock.advance(FIRST_BACKOFF_MS)
    fired = await saga.fire(0)
    assert isinstance(fired, Fired)
    order = fired.next
    assert isinstance(order, DispatchOrder)
    assert (order.step, order.attempt, order.lease, order.task) == (0, 2, 2, "task0")
    s = await saga.step(0)
    assert (s["status"], s["attempt"], s["lease"]) == ("dispatched", "2", "2")
    assert "error" not in s
    assert await saga.claim(0, 1) is False
    assert await saga.claim(0, 2) is True
    moves = [e for e in await saga.events() if e != "claim_rejected"]
    assert moves[-4:] == ["timeout_fail", "retry_later", "retry", "claim"]


async def test_two_supervisors_recover_one_overdue_step_exactly_once(
    saga: Saga, redis_target: RedisTarget
) -> None:
    await saga.create([step(0)])
    saga.clock.advance(DISPATCH_MS)
    other_redis = redis_target.connect()
    try:
        other = saga.other_store(other_redis)
        results = await asyncio.gather(saga.recover(0), saga.recover(0, store=other))
    finally:
        await other_redis.aclose()
    assert len([r for r in results if isinstance(r, Recovered)]) == 1
    assert results.count(None) == 1
    events = await saga.events()
    assert (events.count("timeout_fail"), events.count("retry_later")) == (1, 1)
    s = await saga.step(0)
    assert (s["status"], s["attempt"]) == ("waiting_retry", "1")


async def test_a_timeout_on_the_last_attempt_fails_the_step_and_then_the_job(
    saga: Saga,
) -> None:
    await saga.create([step(0, max_attempts=1)])
    assert await saga.claim(0, 1)
    saga.clock.advance(LEASE_MS)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
    done = recovered.next  # the supervisor follows the failure itself
    assert isinstance(done, Finished) and (done.status, done.ended) == ("failed", True)
    assert json.loads(done.error)["type"] == "LeaseExpired"
    s = await saga.step(0)
    error = json.loads(s["error"])
    assert s["status"] == "failed" and "locked_by" not in s
    # The lease ran out long before the 60 s start-to-close limit: the agent died or hung.
    # A lost lease may be retried; this step had no attempt left.
    assert error == {
        "type": "LeaseExpired",
        "message": "attempt 1: lease expired (agent agent-a)",
        "retryable": True,
    }
    view = await saga.view()
    assert view.status == "failed"
    timeout_fail, job_end = view.history[-2:]
    assert (timeout_fail.event, timeout_fail.step, timeout_fail.previous, timeout_fail.status) == (
        "timeout_fail",
        0,
        "running",
        "failed",
    )
    assert timeout_fail.detail == "LeaseExpired: attempt 1: lease expired (agent agent-a)"
    # The job's own end (no step): running -> failed.
    assert (job_end.event, job_end.step, job_end.previous, job_end.status) == (
        "failed",
        None,
        "running",
        "failed",
    )
    assert await saga.deadline(0) is None
    assert await saga.advance(0, 1) == repeated(done)  # a late announcement changes nothing


async def test_resubmitting_a_rejected_job_id_reports_the_failed_job(saga: Saga) -> None:
    bad = ErrorInfo(type="BadMessage", message="no task", retryable=False)
    assert await saga.store.fail_submission("j1", bad, "scheduler-1", "", "")
    assert not await saga.store.fail_submission("j1", bad, "scheduler-2", "", "")
    again_ = await saga.create([step(0)])
    assert again_ == CreateResult(False, "failed", "", None)
    view = await saga.view()
    assert (view.status, view.error["type"]) == ("failed", "BadMessage")
    assert [(h.event, h.detail) for h in view.history] == [("reject", "no task")]
    assert 0 < await saga.redis.ttl(saga.store.keys.job("j1")) <= TTL_S


async def test_release_hands_a_running_attempt_back_under_a_new_lease(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.store.release("j1", 0, 7, "agent-a") is None  # not its lease
    order = await saga.store.release("j1", 0, 1, "agent-a")
    assert isinstance(order, DispatchOrder)
    # The same attempt (it was cut short, not failed), fencing out the stopped handler.
    assert (order.step, order.attempt, order.lease, order.again) == (0, 1, 2, False)
    s = await saga.step(0)
    assert (s["status"], s["attempt"], s["lease"]) == ("dispatched", "1", "2")
    assert "locked_by" not in s
    assert await saga.deadline(0) == saga.clock.now_ms() + DISPATCH_MS
    assert await saga.record(0, 1, result=b"1") == Stale(status="dispatched", lease=2)
    assert await saga.store.release("j1", 0, 1, "agent-a") is None  # released once
    assert await saga.claim(0, 2, agent="agent-b")
    release = of((await saga.view()).history, "release")
    assert [(h.previous, h.status, h.lease) for h in release] == [("running", "dispatched", 2)]


async def test_claim_due_gives_a_due_member_to_one_caller_until_its_time(saga: Saga) -> None:
    key, now = f"{saga.prefix}:{{cron}}:due", saga.clock.now_ms()
    await saga.redis.zadd(key, {"tick": now})
    assert await saga.store.claim_due(key, "tick", now + 1_000)
    assert not await saga.store.claim_due(key, "tick", now + 1_000)  # held until then
    assert not await saga.store.claim_due(key, "gone", now + 1_000)
    assert await saga.store.claim_due(key, "tick", now + 2_000, now_ms=now + 1_000)
    assert await saga.redis.zscore(key, "tick") == now + 2_000


def digest_of(message: str) -> str:
    """What an agent sends with its claim: the SHA-1 of the dispatch it was delivered."""
    return hashlib.sha1(message.encode(), usedforsecurity=False).hexdigest()


async def test_a_dispatch_that_is_not_the_recorded_one_is_never_claimed(saga: Saga) -> None:
    created = await saga.create([step(0)])
    assert created.order is not None
    real = created.order.message
    # The right job, step and lease, but another task and payload (a forged message).
    forged = real.replace('"task":"task0"', '"task":"sleep"').replace('{"i":0}', '{"i":9}')
    assert forged != real
    with pytest.raises(DispatchMismatch, match="does not match the recorded step"):
        await saga.store.claim(
            "j1", 0, created.order.lease, "agent-a", FLEET, digest=digest_of(forged)
        )
    assert (await saga.step(0))["status"] == "dispatched"
    (rejected,) = of((await saga.view()).history, "claim_rejected")
    assert (rejected.by, rejected.lease, rejected.detail) == (
        "agent-a",
        created.order.lease,
        "the dispatch does not match the recorded step",
    )
    # The message written from the record claims, as does the same one handed out again.
    again = await saga.create([step(0)])
    assert again.order is not None and again.order.message == real
    assert await saga.store.claim(
        "j1", 0, created.order.lease, "agent-a", FLEET, digest=digest_of(real)
    )
