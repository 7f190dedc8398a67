"""The four timeouts through the real services: start-to-close, schedule-to-start,
schedule-to-close (of a running attempt and across retries) and heartbeat.

A deadline that passes fails the attempt like any failure (the supervisor's
``timeout_fail``, typed by the timeout), followed as any failure is: a retry after the
step's backoff while it has attempts (and time) left, else the job's end."""

from __future__ import annotations

import asyncio

from history_support import events, job_end, timed_out_and_retried, view_of

from sasfleet.shared.messages.submit import RetrySpec

# --------------------------------------------------------------------------- timeouts


async def test_start_to_close_timeout_fails_the_attempt(services, client):
    job_id = await client.submit("sleep", {"seconds": 3}, timeout_s=0.5, max_attempts=1)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "StartToCloseTimeout"
    view = await view_of(client, job_id)
    (step,) = view.steps
    assert (step.status, step.attempt, step.error["type"]) == ("failed", 1, "StartToCloseTimeout")
    assert step.finished_at - step.started_at < 2500  # not the 3 s the handler wanted
    (claim,) = events(view.history, "claim", step=0)
    (fail,) = events(view.history, "fail", step=0) or events(view.history, "timeout_fail", step=0)
    assert fail.ts - claim.ts >= 500


async def test_schedule_to_start_timeout_retries_then_fails(services, client, pools, eventually):
    pools.add("nobody")  # no agent serves it; teardown deletes its queue
    job_id = await client.submit(
        "echo", {"x": 1}, pool="nobody", schedule_to_start_s=0.5, max_attempts=2
    )

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "ScheduleToStartTimeout"
    view = await view_of(client, job_id)
    (step,) = view.steps
    assert (step.status, step.attempt, step.pool) == ("failed", 2, "nobody")
    assert step.error["type"] == "ScheduleToStartTimeout"
    h = view.history
    dispatches = [e for e in h if e.event in ("dispatch", "retry") and e.step == 0]
    assert [(d.event, d.attempt) for d in dispatches] == [("dispatch", 1), ("retry", 2)]
    # Attempt 1 was not claimed in time: failed by the supervisor, retried after its backoff.
    first, _, retry = timed_out_and_retried(h, 0, 1)
    assert retry == dispatches[1]
    assert (first.previous, first.detail) == (
        "dispatched",
        "ScheduleToStartTimeout: attempt 1: not claimed in time",
    )
    assert first.ts - dispatches[0].ts >= 500
    # Attempt 2 neither: no attempts left, the job failed.
    (timeout,) = events(h, "timeout_fail", step=0, attempt=2)
    assert (timeout.previous, timeout.detail) == (
        "dispatched",
        "ScheduleToStartTimeout: attempt 2: not claimed in time",
    )
    assert timeout.ts - retry.ts >= 500
    assert timeout.by.startswith("supervisor-")
    (end,) = job_end(h)
    assert (end.status, end.by) == ("failed", timeout.by)
    assert h.index(timeout) < h.index(end)
    assert len(events(h, "retry_later")) == 1
    assert not events(h, "claim")


async def test_schedule_to_close_timeout_stops_a_running_attempt(services, client):
    job_id = await client.submit("sleep", {"seconds": 5}, schedule_to_close_s=1.0, max_attempts=3)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "ScheduleToCloseTimeout"
    view = await view_of(client, job_id)
    (step,) = view.steps
    assert (step.status, step.error["type"]) == ("failed", "ScheduleToCloseTimeout")
    assert step.attempt == 1 < step.max_attempts  # no further attempt
    h = view.history
    (dispatch,) = events(h, "dispatch", step=0)
    (claim,) = events(h, "claim", step=0)
    (timeout,) = events(h, "timeout_fail", step=0)
    assert timeout.detail == "ScheduleToCloseTimeout: attempt 1: schedule-to-close timeout"
    assert (timeout.attempt, timeout.lease, timeout.previous) == (1, claim.lease, "running")
    assert timeout.by.startswith("supervisor-")
    assert 1000 <= timeout.ts - dispatch.ts < 3000
    # The step's time is up: no backoff, no other attempt.
    assert not [e for e in h if e.event in ("retry_later", "retry")]
    (end,) = job_end(h)
    assert (end.status, end.by) == ("failed", timeout.by)


async def test_schedule_to_close_timeout_ends_retries_before_max_attempts(services, client):
    job_id = await client.submit(
        "fail",
        {"message": "still down"},
        retry=RetrySpec(initial_interval_s=1, backoff_coefficient=2, max_interval_s=10, jitter=0),
        schedule_to_close_s=1.5,
        max_attempts=5,
    )

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "failed"
    view = await view_of(client, job_id)
    (step,) = view.steps
    # Attempt 2 failed ~1 s in; attempt 3 would be due ~2 s later, past the 1.5 s limit.
    assert step.attempt == 2 < step.max_attempts == 5
    assert len(events(view.history, "retry_later", step=0)) == 1
    assert view.finished_at - view.created_at < 2500
    assert step.error["type"] == "ScheduleToCloseTimeout", step.error
    assert step.error["retryable"] is False
    assert "RuntimeError: still down" in step.error["message"]  # the last attempt's error
    assert outcome.error is not None and outcome.error.type == "ScheduleToCloseTimeout"
    h = view.history
    (fail_2,) = events(h, "fail", step=0, attempt=2)
    (timeout,) = events(h, "timeout_fail", step=0)
    (end,) = job_end(h)
    # Followed at the failure of attempt 2: the next attempt would start too late.
    assert timeout.attempt == 2 and timeout.lease == fail_2.lease
    assert timeout.detail == (
        "ScheduleToCloseTimeout: no time left for attempt 3 (last error: RuntimeError: still down)"
    )
    assert h.index(fail_2) < h.index(timeout) < h.index(end)
    assert not events(h, "claim", step=0, attempt=3)


async def test_heartbeat_timeout_stops_a_silent_handler_but_not_a_beating_one(services, client):
    silent = await client.submit("sleep", {"seconds": 5}, heartbeat_timeout_s=0.5, max_attempts=1)
    beating = await client.submit(
        "heartbeat_sleep", {"seconds": 2}, heartbeat_timeout_s=0.5, max_attempts=1
    )

    silent_outcome, beating_outcome = await asyncio.gather(
        client.wait(silent, timeout=20), client.wait(beating, timeout=20)
    )

    assert silent_outcome.status == "failed"
    assert silent_outcome.error is not None
    assert silent_outcome.error.type == "HeartbeatTimeout"
    view = await view_of(client, silent)
    (step,) = view.steps
    assert (step.status, step.attempt, step.error["type"]) == ("failed", 1, "HeartbeatTimeout")
    assert 500 <= step.finished_at - step.started_at < 3000  # well before the 5 s sleep

    assert beating_outcome.status == "succeeded", beating_outcome.error
    assert beating_outcome.result == {"slept": 2}
    beat_view = await view_of(client, beating)
    (beat_step,) = beat_view.steps
    assert (beat_step.status, beat_step.attempt) == ("succeeded", 1)
    assert beat_step.progress is not None and beat_step.progress["slept"] > 0
