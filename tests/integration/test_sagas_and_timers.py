"""Sagas, retry policies, timeouts, delayed and periodic jobs, cancellation and priorities,
through the real services (README: "Multi-step jobs, compensation, retries, timeouts")."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from sasfleet.examples.tasks import order_job
from sasfleet.shared.cron import next_tick_ms
from sasfleet.shared.messages.submit import RetrySpec, StepSpec
from sasfleet.shared.state.views import HistoryEntry, JobView
from sasfleet.shared.statemachine import JOB_TERMINAL

pytestmark = pytest.mark.integration

TRIO = (
    ("scheduler", ()),
    ("supervisor", ()),
    ("agent", ("sasfleet.examples.tasks", "--concurrency", "8")),
)


def events(history: list[HistoryEntry], event: str, **match: object) -> list[HistoryEntry]:
    return [
        h for h in history if h.event == event and all(getattr(h, k) == v for k, v in match.items())
    ]


def job_end(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """The job's own terminal transition(s) (no step): succeed, failed, compensated..."""
    return [h for h in history if h.step is None and h.status in JOB_TERMINAL]


def written_by(entry: HistoryEntry, role: str, pid: int) -> bool:
    return entry.by.startswith(f"{role}-") and f"-{pid}-" in entry.by


def now_ms() -> int:
    return int(time.time() * 1000)


def with_options(steps: list[StepSpec], index: int, **options: object) -> list[StepSpec]:
    """``steps`` with step ``index`` given extra step options (retry policy, attempts...)."""
    out = list(steps)
    out[index] = msgspec.structs.replace(out[index], **options)
    return out


async def view_of(client, job_id: str) -> JobView:
    view = await client.get(job_id)
    assert view is not None, f"job {job_id} is not in Redis"
    return view


# --------------------------------------------------------------------------- sagas


async def test_three_step_order_succeeds_with_every_step_result_recorded(services, client):
    job_id = await client.submit(steps=order_job("o-ok"))

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded", outcome.error
    view = await view_of(client, job_id)
    assert view.status == "succeeded" and view.error is None
    # No compensation step was ever created.
    assert [(s.index, s.task, s.status, s.attempt) for s in view.steps] == [
        (0, "reserve_stock", "succeeded", 1),
        (1, "charge_card", "succeeded", 1),
        (2, "ship", "succeeded", 1),
    ]
    reserve, charge, ship = (s.result for s in view.steps)
    assert reserve == {"reservation": f"res-{job_id}:0", "order_id": "o-ok"}
    assert charge == {
        "charge": f"ch-{job_id}:1",
        "amount_cents": 1000,
        "fencing_token": view.steps[1].lease,
    }
    assert ship == {"shipment": f"sh-{job_id}:2", "order_id": "o-ok"}
    assert view.result == outcome.result == ship
    assert not events(view.history, "compensating")
    assert not events(view.history, "compensate")
    (end,) = job_end(view.history)
    assert end.event == "succeed" and end.status == "succeeded"
    assert all(s.compensates is None for s in view.steps)


async def test_failed_last_step_compensates_earlier_steps_in_reverse_order(services, client):
    job_id = await client.submit(steps=order_job("o-comp", fail_step="ship"))

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "compensated"
    assert outcome.error is not None and outcome.error.type == "NonRetryableError"
    view = await view_of(client, job_id)
    assert view.status == "compensated"
    assert view.error["type"] == "NonRetryableError"
    assert "ship refused order o-comp" in view.error["message"]
    reserve, charge, ship, release, refund = view.steps
    assert (reserve.status, charge.status) == ("succeeded", "succeeded")
    assert (ship.status, ship.attempt, ship.error["type"]) == ("failed", 1, "NonRetryableError")
    assert ship.error["retryable"] is False
    # In the job document the compensation of step i is step n + i.
    assert (release.index, release.task, release.compensates) == (3, "release_stock", 0)
    assert (refund.index, refund.task, refund.compensates) == (4, "refund_card", 1)
    assert (release.status, release.attempt) == ("succeeded", 1)
    assert (refund.status, refund.attempt) == ("succeeded", 1)
    # Each compensation saw the result of the step it undoes.
    assert release.result == {"released": reserve.result["reservation"]}
    assert refund.result == {"refunded": charge.result["charge"], "amount_cents": 1000}

    h = view.history
    (compensating,) = events(h, "compensating")
    assert compensating.previous == "running" and compensating.status == "compensating"
    assert compensating.detail == "undoing steps 1, 0"
    compensations = events(h, "compensate")
    assert [(c.step, c.detail) for c in compensations] == [
        (4, "undoes step 1 with refund_card"),
        (3, "undoes step 0 with release_stock"),
    ]
    (ship_fail,) = events(h, "fail", step=2)
    (refund_done,) = events(h, "succeed", step=4)
    (release_done,) = events(h, "succeed", step=3)
    (end,) = job_end(h)
    # refund_card (undoing step 1) ran and finished before release_stock (undoing step 0).
    sequence = [ship_fail, compensating, compensations[0], refund_done, compensations[1]]
    sequence += [release_done, end]
    assert [h.index(e) for e in sequence] == sorted(h.index(e) for e in sequence)
    assert [e.ts for e in sequence] == sorted(e.ts for e in sequence)
    assert refund.finished_at <= release.started_at
    assert end.status == "compensated"


async def test_flaky_step_is_retried_with_the_steps_backoff_policy(services, client):
    policy = RetrySpec(initial_interval_s=0.3, backoff_coefficient=2, max_interval_s=10, jitter=0)
    steps = with_options(
        order_job("o-flaky", flaky_step="charge_card", flaky_until=3),
        1,
        retry=policy,
        max_attempts=5,
    )
    job_id = await client.submit(steps=steps)

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "succeeded", outcome.error
    view = await view_of(client, job_id)
    charge = view.steps[1]
    assert (charge.status, charge.attempt, charge.max_attempts) == ("succeeded", 3, 5)
    assert [s.attempt for s in view.steps] == [1, 3, 1]
    h = view.history
    fails = events(h, "fail", step=1)
    assert [(f.attempt, f.detail) for f in fails] == [
        (1, "RuntimeError: charge_card flaked on attempt 1 (simulated)"),
        (2, "RuntimeError: charge_card flaked on attempt 2 (simulated)"),
    ]
    waits = events(h, "retry_later", step=1)
    assert [(w.attempt, w.status, w.detail) for w in waits] == [
        (1, "waiting_retry", "retry in 300 ms"),
        (2, "waiting_retry", "retry in 600 ms"),
    ]
    retries = [e for e in h if e.event in ("retry", "redispatch") and e.step == 1]
    assert [(r.event, r.attempt, r.previous) for r in retries] == [
        ("retry", 2, "waiting_retry"),
        ("retry", 3, "waiting_retry"),
    ]
    for fail, wait, retry, delay_ms in zip(fails, waits, retries, (300, 600), strict=True):
        assert h.index(fail) < h.index(wait) < h.index(retry)
        gap = retry.ts - fail.ts
        assert delay_ms <= gap < delay_ms + 1500, (delay_ms, gap)
        assert retry.ts - wait.ts >= delay_ms
    # The other steps did not retry.
    assert not [e for e in h if e.event in ("retry_later", "retry") and e.step != 1]


@dataclass
class Webhook:
    """A tiny HTTP server recording every POST (path and JSON body); answers 200."""

    server: ThreadingHTTPServer
    posts: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    received: list[tuple[str, dict]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Webhook(server, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_failing_compensation_escalates_and_posts_the_webhook_once(
    fleet, start_services, client, webhook, eventually, redis, keys
):
    fleet.env["SASFLEET_ESCALATION_WEBHOOK"] = webhook.url
    start_services(*TRIO)
    order = {"order_id": "o-esc"}
    steps = [
        StepSpec(task="reserve_stock", payload=order, compensation="release_stock"),
        # Its compensation (refund_card gets this step's payload) always fails.
        StepSpec(
            task="charge_card",
            payload={**order, "fail_step": "refund_card"},
            compensation="refund_card",
        ),
        StepSpec(task="ship", payload={**order, "fail_step": "ship"}),
    ]
    job_id = await client.submit(steps=steps)

    outcome = await client.wait(job_id, timeout=30)

    assert outcome.status == "escalated"
    view = await view_of(client, job_id)
    assert view.status == "escalated"
    by_index = {s.index: s for s in view.steps}
    # The compensation of step 0 (index 3) was never started: the saga stopped at the one
    # that failed (refund_card, index 4, undoing step 1).
    assert sorted(by_index) == [0, 1, 2, 4]
    ship, refund = by_index[2], by_index[4]
    assert (ship.status, ship.error["type"]) == ("failed", "NonRetryableError")
    assert (refund.task, refund.compensates, refund.status) == ("refund_card", 1, "failed")
    assert refund.error["type"] == "NonRetryableError"
    assert [c.step for c in events(view.history, "compensate")] == [4]
    (end,) = job_end(view.history)
    assert (end.previous, end.status) == ("compensating", "escalated")

    async def posted() -> bool:
        return bool(webhook.posts)

    await eventually(posted, timeout=15, what="the escalation webhook POST")
    # The report is marked done once the webhook answered 2xx...
    await eventually(
        lambda: _zcard_is_zero(redis, keys.escalations(keys.bucket_of(job_id))),
        timeout=10,
        what="the escalation marked reported",
    )
    # ...so no later supervisor tick (every 1 s) posts it again.
    await asyncio.sleep(2.5)
    posts = webhook.posts[:]
    assert len(posts) == 1, posts
    path, body = posts[0]
    assert path == "/hook"
    assert body["event"] == "job_escalated"
    assert body["job_id"] == job_id
    assert body["job"]["status"] == "escalated"
    assert body["by"].startswith("supervisor-")


async def _zcard_is_zero(redis, key: str) -> bool:
    return await redis.zcard(key) == 0


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


async def test_schedule_to_start_timeout_redispatches_then_fails(
    services, client, pools, eventually
):
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
    dispatches = [e for e in h if e.event in ("dispatch", "redispatch") and e.step == 0]
    assert [(d.event, d.attempt) for d in dispatches] == [("dispatch", 1), ("redispatch", 2)]
    assert dispatches[1].detail == "not claimed in time"
    assert dispatches[1].ts - dispatches[0].ts >= 500
    (timeout,) = events(h, "timeout_fail", step=0)
    assert (timeout.attempt, timeout.detail) == (2, "not claimed in time")
    assert timeout.ts - dispatches[1].ts >= 500
    assert timeout.by.startswith("supervisor-")
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
    (dispatch,) = events(view.history, "dispatch", step=0)
    (timeout,) = events(view.history, "timeout_fail", step=0)
    assert timeout.detail == "schedule-to-close timeout"
    assert 1000 <= timeout.ts - dispatch.ts < 3000
    assert not events(view.history, "redispatch")


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
    assert (timeout.attempt, timeout.detail) == (2, "schedule-to-close timeout")
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


# --------------------------------------------------------------------------- delayed jobs


async def test_delayed_job_does_not_start_before_its_delay(services, client):
    job_id = await client.submit("echo", {"late": True}, delay_s=2)

    outcome = await client.wait(job_id, timeout=20)

    assert outcome.status == "succeeded" and outcome.result == {"late": True}
    view = await view_of(client, job_id)
    h = view.history
    (delay,) = events(h, "delay", step=0)
    match = re.fullmatch(r"starts in (\d+) ms", delay.detail or "")
    assert match, delay.detail
    assert 1900 <= int(match.group(1)) <= 2000
    start_at = delay.ts + int(match.group(1))
    (start,) = events(h, "start")
    (dispatch,) = events(h, "dispatch", step=0)
    (claim,) = events(h, "claim", step=0)
    assert start.detail == "start time reached"
    assert start_at <= start.ts <= dispatch.ts <= claim.ts
    assert claim.ts >= view.created_at + 2000
    assert claim.ts < view.created_at + 4000
    assert view.steps[0].attempt == 1


# --------------------------------------------------------------------------- cron


def _tick_of(job_id: str, name: str) -> int | None:
    m = re.fullmatch(rf"cron-{re.escape(name)}-(\d+)", job_id)
    return int(m.group(1)) if m else None


async def test_cron_schedule_fires_each_tick_once_across_two_schedulers(
    fleet, start_services, client, sasfleet_cli, redis, keys, eventually
):
    scheduler_a, scheduler_b, *_ = start_services(("scheduler", ()), *TRIO)
    name = "every2s"

    cron = "* * * * * */2"  # every 2 seconds (croniter's sixth field)
    before_add = now_ms()
    added = await sasfleet_cli("schedule", "add", name, cron, "echo", "--payload", '{"cron": true}')
    after_add = now_ms()
    assert added.returncode == 0, added.stderr
    listed = await sasfleet_cli("schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = listed.json()
    assert entry["schedule"]["name"] == name and entry["schedule"]["cron"] == cron
    assert entry["next_tick_ms"] % 2000 == 0

    async def cron_jobs() -> dict[int, str]:
        ids = await client._reader.job_ids(1000, newest_first=False)
        return {t: j for j in ids if (t := _tick_of(j, name)) is not None}

    async def four_ticks_done() -> bool:  # ~7 s of ticks
        found = await cron_jobs()
        if len(found) < 4:
            return False
        views = [await client.get(j) for j in found.values()]
        return all(v is not None and v.status in JOB_TERMINAL for v in views)

    await eventually(four_ticks_done, timeout=20, what="four cron ticks run")
    removed = await sasfleet_cli("schedule", "remove", name)
    removed_at = now_ms()
    assert removed.returncode == 0, removed.stderr
    listed = await sasfleet_cli("schedule", "list", "--json")
    assert listed.json() == []

    await asyncio.sleep(2.5)  # more than one period: a tick would have fired by now

    found = await cron_jobs()
    ticks = sorted(found)
    # The first tick after the schedule was added, then every consecutive tick, each with
    # one job; nothing after the removal.
    first = ticks[0]
    assert before_add < first <= next_tick_ms(cron, after_add), (before_add, after_add, ticks)
    assert ticks == [first + 2000 * i for i in range(len(ticks))], ticks
    assert len(ticks) >= 4
    assert ticks[-1] <= removed_at
    # The CLI's listing agrees with the jobs index.
    listed_jobs = await sasfleet_cli("jobs", "--json", "--limit", "1000")
    assert listed_jobs.returncode == 0, listed_jobs.stderr
    cli_ids = [j["job_id"] for j in listed_jobs.json() if _tick_of(j["job_id"], name)]
    assert sorted(cli_ids) == sorted(found.values())
    assert len(cli_ids) == len(set(cli_ids))
    creators: Counter[int] = Counter()
    for tick in ticks:
        view = await view_of(client, found[tick])
        assert view.job_id == f"cron-{name}-{tick}"
        assert view.status == "succeeded", (view.job_id, view.status, view.error)
        assert view.result == {"cron": True}
        (submit,) = events(view.history, "submit")  # created once
        assert len(events(view.history, "claim", step=0)) == 1  # ran once
        assert submit.ts >= tick
        pid = next(
            (s.pid for s in (scheduler_a, scheduler_b) if written_by(submit, "scheduler", s.pid)),
            None,
        )
        assert pid is not None, submit
        creators[pid] += 1
    print(f"cron jobs created by scheduler pid: {dict(creators)}")


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
    assert [c.step for c in events(h, "compensate")] == [3]
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


# --------------------------------------------------------------------------- restarts


async def test_retry_timers_survive_a_sigkilled_scheduler(fleet, services, client, eventually):
    n = 10
    retry = RetrySpec(initial_interval_s=2, max_interval_s=10, jitter=0)
    job_ids = await asyncio.gather(
        *(
            client.submit(
                steps=with_options(
                    order_job(f"o-timer-{i}", flaky_step="reserve_stock", flaky_until=2),
                    0,
                    retry=retry,
                )
            )
            for i in range(n)
        )
    )

    async def all_waiting() -> bool:
        views = [await client.get(j) for j in job_ids]
        return all(v is not None and v.steps[0].status == "waiting_retry" for v in views)

    await eventually(all_waiting, timeout=15, what="all first steps waiting to retry")
    old = services.scheduler
    old.kill()
    assert await all_waiting(), "a retry timer fired before the scheduler was killed"

    await asyncio.sleep(3)  # every timer is now overdue, with no scheduler to fire it
    for job_id in job_ids:
        view = await view_of(client, job_id)
        assert view.status == "running" and view.steps[0].status == "waiting_retry"
    new = fleet.scheduler()

    outcomes = await asyncio.gather(*(client.wait(j, timeout=30) for j in job_ids))
    assert [o.status for o in outcomes] == ["succeeded"] * n
    for job_id in job_ids:
        view = await view_of(client, job_id)
        assert [s.attempt for s in view.steps] == [2, 1, 1]
        (retry_event,) = events(view.history, "retry", step=0)
        assert retry_event.attempt == 2
        assert written_by(retry_event, "scheduler", new.pid)
        (wait,) = events(view.history, "retry_later", step=0)
        assert written_by(wait, "scheduler", old.pid)
        assert retry_event.ts - wait.ts >= 3000


# --------------------------------------------------------------------------- priorities


async def test_high_priority_job_overtakes_a_backlog(start_services, client, jobs, eventually):
    start_services(
        ("scheduler", ()),
        ("supervisor", ()),
        ("agent", ("sasfleet.examples.tasks", "--concurrency", "1")),
    )
    backlog = await asyncio.gather(*(client.submit("sleep", {"seconds": 0.2}) for _ in range(20)))

    async def all_dispatched() -> bool:
        views = [await client.get(j) for j in backlog]
        return all(v is not None and v.steps and v.steps[0].attempt >= 1 for v in views)

    await eventually(all_dispatched, timeout=15, what="the backlog dispatched")
    urgent = await client.submit("sleep", {"seconds": 0.2}, priority="high")

    outcomes = await asyncio.gather(*(client.wait(j, timeout=60) for j in [urgent, *backlog]))
    assert [o.status for o in outcomes] == ["succeeded"] * 21
    urgent_done = (await view_of(client, urgent)).steps[0].finished_at
    backlog_done = [(await view_of(client, j)).steps[0].finished_at for j in backlog]
    overtaken = sum(1 for t in backlog_done if t > urgent_done)
    assert overtaken >= 10, (overtaken, sorted(backlog_done), urgent_done)
