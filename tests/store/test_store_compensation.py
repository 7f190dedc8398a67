"""Compensation in the StateStore: the succeeded steps undone in reverse order, retried like
any step, escalated when one cannot finish; and what a step reads of earlier results."""

from __future__ import annotations

import asyncio
import json

from redis_cluster_support import RedisTarget
from store_support import (
    BOOM,
    DECLINED,
    STUCK,
    Saga,
    compensation_dispatches,
    dispatched,
    payload,
    repeated,
    saga_steps,
    step,
)

from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.submit import RetrySpec
from sasfleet.shared.state.records import Finished, Fired, RetryLater
from sasfleet.shared.statemachine import RetryPolicy

# --- compensation -----------------------------------------------------------------------------


async def test_a_final_failure_compensates_the_succeeded_steps_in_reverse_order(
    saga: Saga,
) -> None:
    await saga.create(saga_steps("undo0", "undo1", "undo2"))
    assert isinstance(await saga.run(0, result=b'"r0"'), DispatchOrder)
    assert isinstance(await saga.run(1, result=b'"r1"'), DispatchOrder)
    first = await saga.run(2, error=DECLINED)  # non-retryable: no further attempt
    # The compensation of forward step i is step 3 + i; step 2 failed, so it is not undone.
    assert isinstance(first, DispatchOrder)
    assert (first.step, first.compensates, first.task, first.attempt) == (4, 1, "undo1", 1)
    assert (first.pool, payload(first)) == ("default", {"i": 1})  # the forward step's
    assert dispatched(first).compensates == 1
    assert await saga.job_status() == "compensating"
    second = await saga.run(4, result=b'"undone 1"')
    assert isinstance(second, DispatchOrder)
    assert (second.step, second.compensates, second.task) == (3, 0, "undo0")
    assert second.lease > first.lease
    done = await saga.run(3, result=b'"undone 0"')
    assert isinstance(done, Finished) and (done.status, done.ended) == ("compensated", True)
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
    assert [(h.step, h.status, h.detail) for h in compensation_dispatches(view)] == [
        (4, "dispatched", "undoes step 1 with undo1"),
        (3, "dispatched", "undoes step 0 with undo0"),
    ]
    compensating = [h for h in view.history if h.event == "compensating"]
    assert [(h.previous, h.detail) for h in compensating] == [("running", "undoing steps 1, 0")]
    assert (view.history[-1].step, view.history[-1].status) == (None, "compensated")
    assert await saga.advance(3, second.lease) == repeated(done)  # a duplicate changes nothing
    assert await saga.advance(2, await saga.lease(2)) == repeated(done)


async def test_a_compensation_takes_the_options_of_the_step_it_undoes(saga: Saga) -> None:
    retry = RetrySpec(initial_interval_s=0.2)
    await saga.create(
        [
            step(0, "undo0", timeout_s=7, priority="high", retry=retry, schedule_to_close_s=30),
            step(1),
        ]
    )
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder) and comp.priority == "high"
    message = dispatched(comp)
    assert (message.timeout_s, message.retry, message.compensates) == (7, retry, 0)
    s = await saga.step(comp.step)
    # Not the options that belong to the forward step alone: its overall time limit.
    assert "schedule_to_close_s" not in s and "close_by" not in s
    assert s["task"] == "undo0" and "compensation" not in s


async def test_only_steps_that_name_a_compensation_are_undone(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "", ""))
    await saga.run(0)
    await saga.run(1)
    order = await saga.run(2, error=DECLINED)
    assert isinstance(order, DispatchOrder) and (order.step, order.compensates) == (3, 0)
    done = await saga.run(3)
    assert isinstance(done, Finished) and done.status == "compensated"
    assert [h.step for h in compensation_dispatches(await saga.view())] == [3]


async def test_a_failure_with_nothing_to_compensate_fails_the_job(saga: Saga) -> None:
    await saga.create(saga_steps("", "", "undo2"))
    await saga.run(0)
    done = await saga.run(1, error=DECLINED)
    assert isinstance(done, Finished) and done.status == "failed"
    assert json.loads(done.error)["type"] == "PaymentDeclined"
    assert not compensation_dispatches(await saga.view())


async def test_a_compensation_retries_like_any_step(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder) and comp.step == 2
    later = await saga.run(2, error=BOOM, retry_after_ms=700)
    assert later == RetryLater(due=saga.clock.now_ms() + 700)
    assert (await saga.step(2))["status"] == "waiting_retry"
    saga.clock.advance(700)
    fired = await saga.fire(2)
    assert isinstance(fired, Fired)
    again_ = fired.next
    assert isinstance(again_, DispatchOrder)
    assert (again_.step, again_.attempt, again_.compensates) == (2, 2, 0)
    assert again_.lease > comp.lease
    done = await saga.run(2)
    assert isinstance(done, Finished) and done.status == "compensated"


async def test_a_compensation_that_cannot_finish_escalates_the_job_once(
    saga: Saga, redis_target: RedisTarget
) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    await saga.run(1, error=DECLINED)
    # Attempts are left, but the error is not retryable: no further attempt.
    done = await saga.run(2, error=STUCK)
    assert isinstance(done, Finished) and (done.status, done.ended) == ("escalated", True)
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
    await saga.create([step(0, "undo0"), step(1)])
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder)
    # The agent resolves one attempt for the compensation: a retry request changes nothing.
    done = await saga.run(
        comp.step, error=BOOM, retry_after_ms=100, policy=RetryPolicy(max_attempts=1)
    )
    assert isinstance(done, Finished) and done.status == "escalated"


async def test_a_compensation_that_times_out_is_retried_then_escalates(saga: Saga) -> None:
    await saga.create([step(0, "undo0", max_attempts=2), step(1)])
    await saga.run(0)
    comp = await saga.run(1, error=DECLINED)
    assert isinstance(comp, DispatchOrder)
    for attempt in (1, 2):
        assert await saga.claim(comp.step, await saga.lease(comp.step))
        saga.clock.advance(2_000)  # its agent is lost
        recovered = await saga.recover(comp.step)
        assert recovered is not None and recovered.failure == "LeaseExpired"
        if attempt == 1:
            assert isinstance(recovered.next, RetryLater)
            saga.clock.advance(recovered.next.due - saga.clock.now_ms())
            fired = await saga.fire(comp.step)
            assert isinstance(fired, Fired) and isinstance(fired.next, DispatchOrder)
    done = recovered.next
    assert isinstance(done, Finished) and done.status == "escalated"
    assert json.loads(done.error)["type"] == "LeaseExpired"


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
    assert isinstance(comp, DispatchOrder)
    done = await saga.run(comp.step)
    assert isinstance(done, Finished) and done.ended
    for index, lease in ((comp.step, comp.lease), (1, lease1), (0, 1), (1, 999)):
        assert await saga.advance(index, lease) == repeated(done)
    assert await saga.store.finished("j1") == repeated(done)
