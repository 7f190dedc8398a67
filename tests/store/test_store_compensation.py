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
    of,
    saga_steps,
    step,
)

from sasfleet.shared.state.records import (
    DispatchOrder,
    Finished,
)

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
