"""Cancellation through the real services: a delayed job that never starts, a running step
stopped, an order that compensates what succeeded, and a finished job that refuses it."""

from __future__ import annotations

import asyncio
import re

from history_support import compensation_dispatches, events, job_end, now_ms, view_of

from sasfleet.examples.tasks import order_job

# --------------------------------------------------------------------------- cancellation


async def test_cancelled_delayed_job_never_starts(services, client, jobs, redis, keys):
    job_id = await client.submit("echo", {"x": 1}, delay_s=3)
    await jobs.until(
        job_id,
        lambda v: bool(events(v.history, "delay")),
        timeout=10,
        what="recorded with a delayed start",
    )

    assert await client.cancel(job_id) == "requested"

    view = await jobs.status(job_id, "cancelled", timeout=10)
    (delay,) = events(view.history, "delay")
    start_at = delay.ts + int(re.fullmatch(r"starts in (\d+) ms", delay.detail).group(1))
    assert view.finished_at < start_at
    assert await redis.zscore(keys.timers(keys.bucket_of(job_id)), f"{job_id}|0") is None
    # Past its start time nothing happened to it.
    await asyncio.sleep(max(0.0, (start_at - now_ms()) / 1000) + 0.5)
    view = await view_of(client, job_id)
    assert view.status == "cancelled"
    assert not [e for e in view.history if e.event in ("start", "dispatch", "claim")]
    (step,) = view.steps
    assert (step.status, step.attempt, step.error["type"]) == ("failed", 0, "Cancelled")
    (end,) = job_end(view.history)
    assert (end.previous, end.status) == ("pending", "cancelled")


async def test_cancelled_running_step_is_stopped(services, client, jobs):
    job_id = await client.submit("sleep", {"seconds": 10})
    await jobs.until(
        job_id, lambda v: v.steps[0].status == "running", timeout=15, what="step 0 running"
    )
    asked = now_ms()

    assert await client.cancel(job_id) == "requested"

    outcome = await client.wait(job_id, timeout=8)
    assert outcome.status == "cancelled"
    view = await view_of(client, job_id)
    assert view.status == "cancelled"
    assert view.finished_at - asked < 4000
    (step,) = view.steps
    assert (step.status, step.attempt, step.error["type"]) == ("failed", 1, "Cancelled")
    h = view.history
    (requested,) = events(h, "cancel_requested")
    (fail,) = events(h, "fail", step=0)
    (end,) = job_end(h)
    assert h.index(requested) < h.index(fail) < h.index(end)
    assert fail.by.startswith("agent-")
    assert end.status == "cancelled"


async def test_cancelled_order_compensates_what_succeeded_and_never_ships(services, client, jobs):
    job_id = await client.submit(steps=order_job("o-cancel", work_s=1))
    await jobs.until(
        job_id,
        lambda v: v.steps[1].status == "running",
        timeout=15,
        what="charge_card (step 1) running",
    )

    assert await client.cancel(job_id) == "requested"

    outcome = await client.wait(job_id, timeout=15)
    assert outcome.status == "cancelled"
    view = await view_of(client, job_id)
    reserve, charge, ship, release = view.steps
    assert reserve.status == "succeeded"
    assert (charge.status, charge.error["type"]) == ("failed", "Cancelled")
    assert (ship.status, ship.attempt) == ("pending", 0)
    assert (release.task, release.compensates, release.status) == ("release_stock", 0, "succeeded")
    assert release.result == {"released": reserve.result["reservation"]}
    h = view.history
    assert len(events(h, "claim", step=3)) == 1  # release_stock ran once
    assert [c.step for c in compensation_dispatches(view)] == [3]
    assert not [e for e in h if e.step == 2]  # ship was never dispatched nor claimed
    (end,) = job_end(h)
    assert (end.previous, end.status) == ("compensating", "cancelled")


async def test_cancelling_a_finished_job_is_refused(services, client, sasfleet_cli):
    job_id = await client.submit("echo", {"x": 1})
    assert (await client.wait(job_id, timeout=20)).status == "succeeded"
    before = await view_of(client, job_id)

    assert await client.cancel(job_id) == "succeeded"
    refused = await sasfleet_cli("job", "cancel", job_id)

    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    after = await view_of(client, job_id)
    assert after.status == "succeeded"
    assert after.history == before.history  # no cancel_requested recorded
