"""Cancellation in the StateStore: before a step runs, while it runs, while it waits to
retry, during a compensation, and before the job is recorded."""

from __future__ import annotations

import json

from store_support import (
    ANNOUNCE_MS,
    BOOM,
    DECLINED,
    DISPATCH_MS,
    LEASE_MS,
    Saga,
    compensation_dispatches,
    of,
    repeated,
    saga_steps,
    step,
)

from sasfleet.shared.messages.dispatch import DispatchOrder
from sasfleet.shared.messages.events import ErrorInfo
from sasfleet.shared.state.records import Announce, Finished, Recorded, Recovered, RetryLater

# --- cancellation -----------------------------------------------------------------------------


async def test_cancelling_a_dispatched_step_stops_it_before_it_runs(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "undo1"))
    announce = await saga.cancel()
    assert announce == Announce(step=0, attempt=1, lease=1)
    s = await saga.step(0)
    assert s["status"] == "failed"
    assert json.loads(s["error"]) == {
        "type": "Cancelled",
        "message": "the job was cancelled before the step ran",
        "retryable": False,
    }
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and (done.status, done.ended) == ("cancelled", True)
    assert done.error == ""  # a cancel is no failure of the job
    assert await saga.claim(0, 1) is False  # the dispatch already published is refused
    view = await saga.view()
    assert view.status == "cancelled" and not compensation_dispatches(view)
    assert of(view.history, "claim_rejected")[-1].lease == 1
    assert await saga.cancel() == "cancelled"


async def test_a_cancelled_step_no_scheduler_takes_up_is_followed_by_the_supervisor(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert isinstance(await saga.cancel(), Announce)  # its announcement is lost
    saga.clock.advance(ANNOUNCE_MS - 1)
    assert await saga.recover(0) is None
    saga.clock.advance(1)
    recovered = await saga.recover(0)
    assert isinstance(recovered, Recovered) and recovered.repair
    assert recovered.failure is None  # no deadline passed: it was only not taken up
    done = recovered.next
    assert isinstance(done, Finished) and (done.status, done.ended) == ("cancelled", True)
    assert await saga.deadline(0) is None
    assert await saga.advance(0, 1) == repeated(done)  # the late announcement


async def test_cancelling_a_running_step_asks_its_agent_to_stop(saga: Saga) -> None:
    await saga.create([step(0, "undo0")])
    assert await saga.claim(0, 1)
    assert await saga.store.renew("j1", 0, 1) == "renewed"
    assert await saga.cancel() == "running"
    assert (await saga.step(0))["status"] == "running"
    assert await saga.store.renew("j1", 0, 1) == "cancel_requested"
    assert await saga.cancel() == "already"
    stopped = ErrorInfo(type="Cancelled", message="stopped", retryable=False)
    assert await saga.record(0, 1, error=stopped) == Recorded()
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"
    events = await saga.events()
    assert events.count("cancel_requested") == 1
    assert "cancel" not in events  # the running step was not moved by the cancel


async def test_a_cancelled_job_is_not_retried(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.cancel() == "running"
    assert await saga.record(0, 1, error=BOOM, retry_after_ms=100) == Recorded()
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"
    assert await saga.timer(0) is None


async def test_cancelling_a_step_waiting_to_retry_removes_its_timer(saga: Saga) -> None:
    await saga.create([step(0)])
    await saga.run(0, error=BOOM, retry_after_ms=1_000)
    assert await saga.cancel() == Announce(step=0, attempt=1, lease=1)
    assert await saga.timer(0) is None
    cancel = of((await saga.view()).history, "cancel")[-1]
    assert (cancel.previous, cancel.status) == ("waiting_retry", "failed")
    saga.clock.advance(1_000)
    assert await saga.fire(0) is None
    done = await saga.advance(0, 1)
    assert isinstance(done, Finished) and done.status == "cancelled"


async def test_cancelling_a_delayed_job_before_it_starts(saga: Saga) -> None:
    await saga.create([step(0)], start_at_ms=saga.clock.now_ms() + 5_000)
    announce = await saga.cancel()
    assert announce == Announce(step=0, attempt=0, lease=0)
    assert await saga.timer(0) is None
    done = await saga.advance(0, 0)
    assert isinstance(done, Finished) and done.status == "cancelled"
    job_end = (await saga.view()).history[-1]
    assert (job_end.event, job_end.previous) == ("cancelled", "pending")
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
    assert [h.step for h in compensation_dispatches(view)] == [3]
    assert view.history[-1].status == "cancelled"
    assert view.history[-1].previous == "compensating"


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


async def test_a_compensation_of_a_cancelled_job_still_retries(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", ""))
    await saga.run(0)
    assert isinstance(await saga.cancel(), Announce)
    comp = await saga.advance(1, await saga.lease(1))
    assert isinstance(comp, DispatchOrder) and comp.compensates == 0
    later = await saga.run(comp.step, error=BOOM, retry_after_ms=50)
    assert later == RetryLater(due=saga.clock.now_ms() + 50)
    assert (await saga.step(comp.step))["status"] == "waiting_retry"


async def test_a_step_that_succeeds_after_the_cancel_is_compensated_too(saga: Saga) -> None:
    await saga.create(saga_steps("undo0", "undo1", "undo2"))
    await saga.run(0)
    lease1 = await saga.lease(1)
    assert await saga.claim(1, lease1)
    assert await saga.cancel() == "running"
    assert await saga.record(1, lease1, result=b'"r1"', advance=True) == Recorded()
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
    assert await saga.store.renew("j1", comp.step, comp.lease) == "renewed"


async def test_a_cancelled_job_whose_agent_died_is_not_tried_again(saga: Saga) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.cancel() == "running"
    saga.clock.advance(LEASE_MS)  # the agent died before it learned of the cancel
    recovered = await saga.recover(0)
    # The failure names why the deadline passed; the step is failed as cancelled.
    assert isinstance(recovered, Recovered) and recovered.failure == "LeaseExpired"
    done = recovered.next
    assert isinstance(done, Finished) and done.status == "cancelled"
    error = json.loads((await saga.step(0))["error"])
    assert error == {
        "type": "Cancelled",
        "message": "attempt 1: the job was cancelled; lease expired (agent agent-a)",
        "retryable": False,
    }
    assert await saga.timer(0) is None


async def test_a_released_step_of_a_cancelled_job_fails_as_cancelled_at_its_deadline(
    saga: Saga,
) -> None:
    await saga.create([step(0)])
    assert await saga.claim(0, 1)
    assert await saga.cancel() == "running"
    order = await saga.store.release("j1", 0, 1, "agent-a")  # its agent shut down
    assert order is not None and (order.attempt, order.lease) == (1, 2)
    saga.clock.advance(DISPATCH_MS)  # no agent took it up
    recovered = await saga.recover(0)
    # Why the deadline passed, and the failure the step got: the job was cancelled.
    assert isinstance(recovered, Recovered) and recovered.failure == "ScheduleToStartTimeout"
    assert isinstance(recovered.next, Finished) and recovered.next.status == "cancelled"
    error = json.loads((await saga.step(0))["error"])
    assert (error["type"], error["message"]) == (
        "Cancelled",
        "attempt 1: the job was cancelled; not claimed in time",
    )


async def test_a_job_cancelled_before_it_is_recorded_is_created_cancelled(saga: Saga) -> None:
    assert await saga.cancel("early") == "unknown"
    created = await saga.create(saga_steps("undo0"), job_id="early", reply_to="replies")
    assert (created.created, created.job_status, created.order) == (True, "cancelled", None)
    # The job ended as it was recorded: the submitter is told by whoever recorded it.
    assert created.ended == Finished(status="cancelled", reply_to="replies", ended=True)
    view = await saga.view("early")
    assert view.status == "cancelled"
    assert [h.event for h in view.history] == ["submit", "cancelled"]
    assert view.history[-1].by == "client-1"
    assert await saga.redis.exists(saga.store.keys.cancel_marker("early")) == 0
    assert await saga.deadline(0, "early") is None
    assert await saga.claim(0, 0, job_id="early") is False
    again_ = await saga.create(saga_steps("undo0"), job_id="early")
    assert (again_.created, again_.job_status) == (False, "cancelled")
    assert await saga.cancel("early") == "cancelled"


async def test_a_job_cancelled_on_arrival_expires_like_any_finished_job(saga: Saga) -> None:
    await saga.cancel("early")
    await saga.create([step(0)], job_id="early")
    assert await saga.redis.ttl(saga.store.keys.job("early")) > 0
